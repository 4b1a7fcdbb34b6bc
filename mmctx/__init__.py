"""mmctx: multimodal long-context models.

Encoders turn text, images and audio into :class:`~mmctx.types.Tokens`; a fusion module
merges them into one :class:`~mmctx.types.ExtendedContext`; a head consumes it. Layers are
plain PyTorch modules; ``mmctx.load(path)`` returns a trained model's
:class:`~mmctx.inference.Predictor` (caption / classify files). Only :mod:`mmctx.trainers`, the data modules and :mod:`mmctx.cli`
import Lightning.
"""

from mmctx.types import ExtendedContext, ModalityInput, MultimodalBatch, Tokens

__version__ = "0.1.0"

__all__ = ["Tokens", "ExtendedContext", "ModalityInput", "MultimodalBatch", "load", "export", "__version__"]


def __getattr__(name: str):
    """``mmctx.load`` / ``mmctx.export`` (:mod:`mmctx.inference`), imported on first use so
    that ``import mmctx`` stays light."""
    if name in {"load", "export"}:
        from mmctx import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'mmctx' has no attribute {name!r}")
