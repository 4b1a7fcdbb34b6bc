"""The fusion contract shared by every fusion module."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from mmctx.types import Tokens, check_shape

__all__ = ["Fusion"]


class Fusion(nn.Module):
    """Base class: merges per-modality :class:`Tokens` into one ``ExtendedContext``.

    Every fusion has the same call signature, ``fusion(tokens) -> ExtendedContext``, so a
    YAML line swaps one for another. ``tokens`` maps modality names to their encoder's
    output; any non-empty subset of ``input_dims``' keys may be present.

    Args:
        input_dims: modality name → width D_m of that modality's tokens; the order of the
            keys fixes the modality ids in ``ExtendedContext.modality``.
        dim: width D of the fused context.
    """

    def __init__(self, input_dims: dict[str, int], dim: int) -> None:
        super().__init__()
        if not input_dims:
            raise ValueError(f"{type(self).__name__}: input_dims must name at least one modality")
        for name, width in input_dims.items():
            if not isinstance(width, int) or width <= 0:
                raise ValueError(f"{type(self).__name__}: input_dims[{name!r}] must be a positive int, got {width!r}")
        self.input_dims = dict(input_dims)
        self.modalities: tuple[str, ...] = tuple(input_dims)
        self.dim = dim
        self.out_dim = dim

    def check_tokens(self, tokens: Mapping[str, Tokens]) -> int:
        """Validate the inputs of ``forward``; returns the batch size.

        Raises:
            ValueError: no modality, an unknown modality, a width that differs from
                ``input_dims`` or batch sizes that disagree — naming the modality at fault.
        """
        name = type(self).__name__
        if not tokens:
            raise ValueError(f"{name}: got no modality; expected some of {list(self.modalities)}")
        unknown = [m for m in tokens if m not in self.input_dims]
        if unknown:
            raise ValueError(f"{name}: unknown modalities {unknown}; this fusion was built for {list(self.modalities)}")
        batch: int | None = None
        for m, tok in tokens.items():
            check_shape(f"{name} tokens[{m!r}].x", tok.x, (batch if batch is not None else "B", "N", self.input_dims[m]))
            batch = tok.x.shape[0]
        assert batch is not None
        return batch

    def modality_id(self, name: str) -> int:
        """The id of modality ``name`` in ``ExtendedContext.modality``."""
        return self.modalities.index(name)

    def forward(self, tokens: Mapping[str, Tokens]):  # pragma: no cover - abstract
        raise NotImplementedError


def _ordered(fusion: Fusion, tokens: Mapping[str, Tokens]) -> list[tuple[str, Tokens]]:
    """The present modalities in ``input_dims`` order (a fixed order keeps outputs stable)."""
    return [(m, tokens[m]) for m in fusion.modalities if m in tokens]


