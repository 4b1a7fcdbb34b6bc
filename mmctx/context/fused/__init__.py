"""Context encoders: run AFTER the fusion, over the fused :class:`~mmctx.types.ExtendedContext`
(``context -> context``, same type; the same shapes except :class:`ChunkMaxPool`, which shortens one
modality), between the fusion and the head.

ContextEncoder and RecurrentMemoryEncoder take one modality's :class:`~mmctx.types.Tokens` too, so a
:class:`~mmctx.context.StackedEncoder` can run one over a single modality before the fusion.
"""

from mmctx.context.fused.chunk_pool import ChunkMaxPool
from mmctx.context.fused.context_encoder import ContextEncoder
from mmctx.context.fused.memory import RecurrentMemoryEncoder

__all__ = ["ChunkMaxPool", "ContextEncoder", "RecurrentMemoryEncoder"]
