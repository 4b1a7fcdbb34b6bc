"""Long-context machinery over the extended context."""

from mmctx.context.encoder import ContextEncoder

__all__ = ["ContextEncoder"]
