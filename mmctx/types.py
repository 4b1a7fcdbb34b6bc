"""The data types shared by every mmctx module, and the shape legend.

Shape legend (used in every ``Shapes:`` docstring section and inline comment):

    B   batch size
    N   number of tokens in a sequence (T for text tokens / decoder steps)
    S   number of audio samples
    D   model width (``dim``); D_m is the width of modality m's encoder
    H   attention heads; D/H is the width of one head
    C   channels (image or feature map); h, w: a feature map's height and width
    F   audio frames (after the log-mel front end); M mel bins
    V   vocabulary size
    K   number of classes

Masks are boolean and always mean the same thing: ``mask[b, n] is True`` ⇔ position ``n``
of sample ``b`` is real (not padding, not missing). A modality missing from a whole batch
is an absent key; a modality missing for one sample is a row of ``False`` in its mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "Tokens",
    "ExtendedContext",
    "ModalityInput",
    "MultimodalBatch",
    "MODALITIES",
    "check_shape",
]

#: The modality names the built-in encoders and data sets use.
MODALITIES: tuple[str, ...] = ("text", "image", "audio")


def check_shape(name: str, tensor: Tensor, expected: tuple[int | str | None, ...]) -> None:
    """Raise a ``ValueError`` naming ``name`` when ``tensor`` does not match ``expected``.

    ``expected`` holds one entry per dimension: an int must match exactly, a string or
    ``None`` matches any size (the string is only used in the message, e.g. ``"B"``).
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
    legend = "(" + ", ".join(str(e) for e in expected) + ")"
    if tensor.dim() != len(expected):
        raise ValueError(
            f"{name}: expected a {len(expected)}-D tensor {legend}, got shape {tuple(tensor.shape)}"
        )
    for i, (size, want) in enumerate(zip(tensor.shape, expected)):
        if isinstance(want, int) and size != want:
            raise ValueError(
                f"{name}: dimension {i} should be {want} {legend}, got shape {tuple(tensor.shape)}"
            )


@dataclass
class Tokens:
    """A sequence of token embeddings from one encoder.

    Attributes:
        x: token embeddings, shape (B, N, D).
        mask: (B, N) bool, True where the token is real.
    """

    x: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        check_shape("Tokens.x", self.x, ("B", "N", "D"))
        check_shape("Tokens.mask", self.mask, tuple(self.x.shape[:2]))
        if self.mask.dtype != torch.bool:
            raise ValueError(f"Tokens.mask must be torch.bool, got {self.mask.dtype}")

    @property
    def dim(self) -> int:
        return self.x.shape[-1]

    def to(self, *args, **kwargs) -> Tokens:
        return Tokens(_move(self.x, args, kwargs), _move(self.mask, args, kwargs))


@dataclass
class ExtendedContext:
    """The fused multimodal context a head consumes.

    Attributes:
        x: (B, N, D) token embeddings of every modality, in one width ``D``.
        mask: (B, N) bool, True where the token is real.
        modality: (B, N) long, index into ``names`` of the modality each token came from.
        names: the modality names, ``names[modality[b, n]]`` is token n's modality.
    """

    x: Tensor
    mask: Tensor
    modality: Tensor
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_shape("ExtendedContext.x", self.x, ("B", "N", "D"))
        check_shape("ExtendedContext.mask", self.mask, tuple(self.x.shape[:2]))
        check_shape("ExtendedContext.modality", self.modality, tuple(self.x.shape[:2]))
        if self.mask.dtype != torch.bool:
            raise ValueError(f"ExtendedContext.mask must be torch.bool, got {self.mask.dtype}")

    @property
    def dim(self) -> int:
        return self.x.shape[-1]


@dataclass
class ModalityInput:
    """Raw input of one modality for a batch, as produced by a collate function.

    ``data`` and ``mask`` per modality:

    ========  ===========================  =======================================
    modality  data                         mask
    ========  ===========================  =======================================
    text      (B, T) long token ids        (B, T) bool, True at real tokens
    image     (B, C, H, W) float in [0,1]  (B,) bool, True if the sample has one
              (or normalised)
    audio     (B, S) float waveform        (B, S) bool, True at real samples
    ========  ===========================  =======================================

    A sample that lacks the modality has an all-False mask row; its ``data`` row is
    padding and must never be read as data.
    """

    data: Tensor
    mask: Tensor

    def to(self, *args, **kwargs) -> ModalityInput:
        return ModalityInput(_move(self.data, args, kwargs), _move(self.mask, args, kwargs))


@dataclass
class MultimodalBatch:
    """One collated batch.

    Attributes:
        inputs: modality name → :class:`ModalityInput`; modalities absent from the whole
            batch are absent keys.
        targets: target name → tensor, e.g. ``"label"``: (B,) long class indices.
        ids: one identifier per sample (file name or manifest id), for logs and errors.
        meta: free-form per-batch information (e.g. source manifest lines), never tensors.
    """

    inputs: dict[str, ModalityInput]
    targets: dict[str, Tensor] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    meta: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        for value in self.inputs.values():
            return value.data.shape[0]
        for value in self.targets.values():
            return value.shape[0]
        return len(self.ids)

    def to(self, *args, **kwargs) -> MultimodalBatch:
        """Move every tensor (Lightning calls this to put the batch on the device)."""
        return MultimodalBatch(
            inputs={k: v.to(*args, **kwargs) for k, v in self.inputs.items()},
            targets={k: _move(v, args, kwargs) for k, v in self.targets.items()},
            ids=list(self.ids),
            meta=dict(self.meta),
        )


def _move(t: Tensor, args: tuple, kwargs: dict) -> Tensor:
    """``t.to(*args, **kwargs)``, but a dtype change applies to floating tensors only.

    Token ids, lengths and masks keep their integer/bool dtype when a batch is cast to
    bf16 or fp16 (Lightning's precision plugins move batches with a dtype).
    """
    if t.is_floating_point():
        return t.to(*args, **kwargs)
    device = torch.empty(0, device=t.device).to(*args, **kwargs).device
    return t.to(device=device, non_blocking=bool(kwargs.get("non_blocking", False)))
