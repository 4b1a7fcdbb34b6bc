"""Long-context machinery, by the stage it runs at:

* :mod:`mmctx.context.wrappers` — BEFORE the fusion: wrap a modality encoder
  (``(data, mask) -> Tokens``) so it serves long inputs: :class:`OverlappingWindowEncoder`
  (overlapping windows, smoothed merge), :class:`StackedEncoder` (an encoder, then a context encoder over its tokens),
  :class:`StreamingMemoryEncoder` (segments + recurrent memory, streamed in constant memory);
* :mod:`mmctx.context.fused` — AFTER the fusion: re-encode the fused
  :class:`~mmctx.types.ExtendedContext`: :class:`ContextEncoder` (full or sliding-window
  attention with global tokens), :class:`RecurrentMemoryEncoder` (segments + memory tokens),
  :class:`ChunkMaxPool` (one modality max-pooled a chunk at a time, for a decoder that attends the
  context).

Every name is importable from here (``mmctx.context.ContextEncoder``), as configs write it.
"""

from mmctx.context.fused import ChunkMaxPool, ContextEncoder, RecurrentMemoryEncoder
from mmctx.context.wrappers import OverlappingWindowEncoder, StackedEncoder, StreamingMemoryEncoder

__all__ = [
    "OverlappingWindowEncoder",
    "StackedEncoder",
    "StreamingMemoryEncoder",
    "ChunkMaxPool",
    "ContextEncoder",
    "RecurrentMemoryEncoder",
]
