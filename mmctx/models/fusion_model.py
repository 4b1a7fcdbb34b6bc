"""Encoders + fusion (+ context encoder) + head, as one plain ``nn.Module``."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from mmctx.types import ExtendedContext, ModalityInput, MultimodalBatch, Tokens

__all__ = ["FusionModel"]


class FusionModel(nn.Module):
    """The standard composition: one encoder per modality → fusion → context encoder → head.

    Built from ready-made submodules (the YAML nests their ``class_path``), so any encoder,
    fusion or head that honours the contracts plugs in.

    Args:
        encoders: modality name → encoder (``forward(data, mask) -> Tokens``, ``out_dim``).
        fusion: a :class:`~mmctx.fusion.Fusion`; its ``input_dims`` must agree with the
            encoders' ``out_dim``.
        head: consumes the :class:`~mmctx.types.ExtendedContext`.
        context_encoder: optional module ``ExtendedContext -> ExtendedContext`` run between
            fusion and head.
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        fusion: nn.Module,
        head: nn.Module,
        context_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not encoders:
            raise ValueError("FusionModel: encoders must name at least one modality")
        input_dims: dict[str, int] | None = getattr(fusion, "input_dims", None)
        if input_dims is not None:
            for name, enc in encoders.items():
                if name not in input_dims:
                    raise ValueError(
                        f"FusionModel: encoders[{name!r}] has no entry in fusion.input_dims {input_dims}"
                    )
                out_dim = getattr(enc, "out_dim", None)
                if out_dim != input_dims[name]:
                    raise ValueError(
                        f"FusionModel: encoders[{name!r}].out_dim={out_dim} but fusion.input_dims[{name!r}]="
                        f"{input_dims[name]}; make them equal (a YAML anchor keeps them in one place)"
                    )
        fusion_dim = getattr(fusion, "out_dim", None)
        # a head that cross-attends the context (a text decoder) reads it at `context_dim`,
        # which may differ from its own width; other heads read it at `dim`
        head_attr = "context_dim" if getattr(head, "context_dim", None) is not None else "dim"
        head_dim = getattr(head, head_attr, None)
        if fusion_dim is not None and head_dim is not None and fusion_dim != head_dim:
            raise ValueError(f"FusionModel: fusion.out_dim={fusion_dim} but head.{head_attr}={head_dim}")
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.context_encoder = context_encoder
        self.head = head

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.encoders.keys())

    def encode_modalities(self, inputs: Mapping[str, ModalityInput]) -> dict[str, Tokens]:
        """Run each present modality through its encoder.

        Raises:
            ValueError: an input modality has no encoder (it would otherwise be silently
                ignored), or no modality of this model is present.
        """
        extra = [m for m in inputs if m not in self.encoders]
        if extra:
            raise ValueError(
                f"FusionModel: the batch has modalities {extra} but the model has encoders only for "
                f"{list(self.encoders)}; drop them in the data module's `modalities` or add encoders"
            )
        tokens = {m: self.encoders[m](inp.data, inp.mask) for m, inp in inputs.items()}
        if not tokens:
            raise ValueError(f"FusionModel: the batch has none of the modalities {list(self.encoders)}")
        return tokens

    def encode(self, inputs: Mapping[str, ModalityInput] | MultimodalBatch) -> ExtendedContext:
        """Encoders → fusion → optional context encoder.

        Shapes:
            inputs[m]: see :class:`~mmctx.types.ModalityInput`
            returns: ExtendedContext (B, N, D)
        """
        if isinstance(inputs, MultimodalBatch):
            inputs = inputs.inputs
        return self.fuse(self.encode_modalities(inputs))

    def fuse(self, tokens: Mapping[str, Tokens]) -> ExtendedContext:
        """Fusion → optional context encoder, from the encoders' outputs (what :meth:`encode`
        does after :meth:`encode_modalities`; a trainer that also needs the per-modality
        tokens, e.g. for an auxiliary loss, calls the two halves itself).

        Shapes:
            tokens[m]: Tokens (B, N_m, D_m)
            returns: ExtendedContext (B, N, D)
        """
        context = self.fusion(tokens)
        if self.context_encoder is not None:
            context = self.context_encoder(context)
        return context

    def forward(self, inputs: Mapping[str, ModalityInput] | MultimodalBatch) -> Tensor:
        """Shapes: inputs as in :meth:`encode` → the head's output, e.g. logits (B, K)."""
        return self.head(self.encode(inputs))
