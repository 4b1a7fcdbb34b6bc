"""Long-context machinery over the extended context."""

from mmctx.context.encoder import ContextEncoder
from mmctx.context.hierarchical import HierarchicalEncoder
from mmctx.context.memory import RecurrentMemoryEncoder
from mmctx.context.sliding import SlidingWindowContextEncoder
from mmctx.context.stacked import StackedEncoder
from mmctx.context.windowed import WindowedEncoder

__all__ = [
    "ContextEncoder",
    "SlidingWindowContextEncoder",
    "RecurrentMemoryEncoder",
    "WindowedEncoder",
    "HierarchicalEncoder",
    "StackedEncoder",
]
