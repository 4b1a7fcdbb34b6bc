"""What the Hugging Face towers share once their backbone is loaded: which backbone
parameters train (freeze, last K layers, name patterns, unused ones), gradient checkpointing,
eval mode for frozen parts, and the optional output projection."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from mmctx.encoders._finetune import configure_trainable, eval_frozen_parts, freeze_unused
from mmctx.encoders.hf._load import enable_gradient_checkpointing

__all__ = ["HFTower"]


class HFTower(nn.Module):
    """Base of :class:`HFTextEncoder`, :class:`HFVisionEncoder` and :class:`HFSpeechEncoder`.

    A subclass loads ``self.backbone``, then calls :meth:`_finish_backbone`, which sets
    ``freeze``, ``unused_parameters``, ``proj`` and ``out_dim``.
    """

    backbone: nn.Module

    def _finish_backbone(
        self,
        owner: str,
        probe: Callable[[], Tensor],
        hidden: int,
        out_dim: int | None,
        freeze: bool,
        train_last_layers: int | None,
        trainable: list[str] | None,
        gradient_checkpointing: bool,
    ) -> None:
        """Decide what trains and add the projection.

        Args:
            owner: the encoder's name, for error messages.
            probe: a tiny forward pass through the backbone, returning the tensor the tokens
                come from; parameters it never reaches are frozen and listed.
            hidden: the backbone's token width.
            out_dim: width of a Linear projection; None keeps ``hidden``.
        """
        self.hidden_size = hidden
        self.freeze = freeze
        self.unused_parameters: list[str] = [] if freeze else freeze_unused(self.backbone, probe)
        configure_trainable(owner, self.backbone, freeze, train_last_layers, trainable)
        if gradient_checkpointing:
            enable_gradient_checkpointing(owner, self.backbone)
        # `from_pretrained` returns the model in eval mode, and Lightning keeps the modes it is
        # given: start in training mode like any new module (dropout on), frozen parts in eval
        self.backbone.train()
        eval_frozen_parts(self.backbone)
        self.proj = nn.Linear(hidden, out_dim) if out_dim is not None else None
        self.out_dim = out_dim if out_dim is not None else hidden

    def train(self, mode: bool = True) -> HFTower:
        """Set training mode; frozen parts of the backbone always stay in eval mode."""
        super().train(mode)
        eval_frozen_parts(self.backbone)
        return self
