"""Encoder wrappers: run BEFORE the fusion. Each wraps a modality encoder so it serves inputs
longer than its window, and is itself a modality encoder (``forward(data, mask) -> Tokens``,
``out_dim``) that goes wherever one does (``FusionModel(encoders={...})``, YAML).
"""

from mmctx.context.wrappers.overlapping_windows import OverlappingWindowEncoder
from mmctx.context.wrappers.stacked import StackedEncoder
from mmctx.context.wrappers.streaming_memory import StreamingMemoryEncoder

__all__ = ["OverlappingWindowEncoder", "StackedEncoder", "StreamingMemoryEncoder"]
