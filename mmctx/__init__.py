"""mmctx: multimodal long-context models.

Encoders turn text, images and audio into :class:`~mmctx.types.Tokens`; a fusion module
merges them into one :class:`~mmctx.types.ExtendedContext`; a head consumes it. Layers are
plain PyTorch modules; only :mod:`mmctx.trainers`, the data modules and :mod:`mmctx.cli`
import Lightning.
"""

from mmctx.types import ExtendedContext, ModalityInput, MultimodalBatch, Tokens

__version__ = "0.1.0"

__all__ = ["Tokens", "ExtendedContext", "ModalityInput", "MultimodalBatch", "__version__"]
