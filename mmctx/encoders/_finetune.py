"""Which backbone parameters train: all, none (frozen), the last K layers, or those matching patterns.

Private helpers shared by the pretrained encoders. A frozen part of a backbone also stays in
eval mode (no dropout, BatchNorm keeps its running statistics) when the encoder trains.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase

import torch
from torch import Tensor, nn

__all__ = [
    "check_finetune_args",
    "configure_trainable",
    "eval_frozen_parts",
    "freeze_unused",
    "find_layer_list",
]

_LAYER_LIST_NAMES = {"layer", "layers", "stages", "blocks", "block", "h"}


def check_finetune_args(owner: str, freeze: bool, train_last_layers: int | None, trainable: list[str] | None) -> None:
    """Raise a ``ValueError`` unless at most one way of choosing trainable parameters is given."""
    chosen = [n for n, v in (("freeze", freeze), ("train_last_layers", train_last_layers), ("trainable", trainable)) if v]
    if len(chosen) > 1:
        raise ValueError(f"{owner}: pass at most one of freeze, train_last_layers, trainable; got {chosen}")
    if train_last_layers is not None and train_last_layers < 1:
        raise ValueError(f"{owner}: train_last_layers must be >= 1 (or None), got {train_last_layers}")
    if trainable is not None and (isinstance(trainable, str) or not trainable):
        raise ValueError(f"{owner}: trainable must be a non-empty list of name patterns, got {trainable!r}")


def find_layer_list(owner: str, backbone: nn.Module) -> tuple[str, nn.Module]:
    """The backbone's main stack of layers: the largest ``ModuleList``/``Sequential`` named like one.

    ``encoder.layer`` (BERT, ViT), ``encoder.layers`` (CLIP, wav2vec2, Whisper),
    ``encoder.stages`` (ConvNeXt), ``blocks`` (timm EfficientNet), ...
    """
    best: tuple[int, str, nn.Module] | None = None
    for name, module in backbone.named_modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and name.rsplit(".", 1)[-1] in _LAYER_LIST_NAMES and len(module) > 0:
            size = sum(p.numel() for p in module.parameters())
            if best is None or size > best[0]:
                best = (size, name, module)
    if best is None:
        raise ValueError(
            f"{owner}: found no stack of layers (a ModuleList named one of {sorted(_LAYER_LIST_NAMES)}) in "
            f"{type(backbone).__name__}; choose parameters with trainable=[name patterns] instead"
        )
    return best[1], best[2]


def configure_trainable(
    owner: str, backbone: nn.Module, freeze: bool, train_last_layers: int | None, trainable: list[str] | None
) -> None:
    """Set ``requires_grad`` on the backbone's parameters.

    * ``freeze``: none trains;
    * ``train_last_layers=K``: the last K layers of :func:`find_layer_list` and every
      parameter registered after that stack (a final norm) train;
    * ``trainable=[patterns]``: the parameters whose names (relative to the backbone) match
      one of the ``fnmatch`` patterns train, e.g. ``["encoder.layer.11.*", "layernorm.*"]``;
    * none of these: all train.

    Parameters already frozen (e.g. by :func:`freeze_unused`) stay frozen.

    Raises:
        ValueError: for a pattern that matches no parameter, or K above the number of layers.
    """
    if not (freeze or train_last_layers or trainable):
        return
    allowed = {n for n, p in backbone.named_parameters() if p.requires_grad}
    chosen: set[str] = set()
    if train_last_layers:
        list_name, layers = find_layer_list(owner, backbone)
        if train_last_layers > len(layers):
            raise ValueError(f"{owner}: train_last_layers={train_last_layers} but {list_name} has {len(layers)} layers")
        names = [n for n, _ in backbone.named_parameters()]
        inside = [n for n in names if n.startswith(list_name + ".")]
        last = max(names.index(n) for n in inside)
        keep = {f"{list_name}.{i}." for i in range(len(layers) - train_last_layers, len(layers))}
        chosen = {n for n in inside if any(n.startswith(k) for k in keep)} | set(names[last + 1 :])
    elif trainable:
        names = [n for n, _ in backbone.named_parameters()]
        for pattern in trainable:
            hits = {n for n in names if fnmatchcase(n, pattern)}
            if not hits:
                raise ValueError(f"{owner}: trainable pattern {pattern!r} matches no parameter; names look like {names[:3] + names[-3:]}")
            chosen |= hits
    for name, param in backbone.named_parameters():
        param.requires_grad_(name in chosen and name in allowed)


def eval_frozen_parts(backbone: nn.Module) -> None:
    """Put every sub-tree of the backbone whose parameters are all frozen in eval mode.

    A module without parameters of its own subtree (an activation, a dropout) keeps its
    parent's mode, so dropout inside a trainable layer stays active.
    """
    for module in backbone.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def freeze_unused(backbone: nn.Module, probe: Callable[[], Tensor]) -> list[str]:
    """Freeze the parameters that the encoder's output never depends on, and return their names.

    ``probe()`` runs the backbone as the encoder does (in eval mode, on a tiny input) and
    returns the output tensor; the parameters that get no gradient from it are the ones
    used only by other heads (BERT's and ViT's pooler, CLIP's ``post_layernorm``, ConvNeXt's
    pooled-output norm) or only in training (wav2vec2's ``masked_spec_embed`` for
    SpecAugment). Left trainable they would never receive a gradient, which DDP reports as
    an error. Modes, gradients and the RNG state are restored afterwards.
    """
    modes = [(m, m.training) for m in backbone.modules()]
    grads = {p: p.grad for p in backbone.parameters()}
    try:
        backbone.eval()
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            probe().float().sum().backward()
        unused = [n for n, p in backbone.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        for module, training in modes:
            module.training = training
        for p, g in grads.items():
            p.grad = g
    for name, param in backbone.named_parameters():
        if name in unused:
            param.requires_grad_(False)
    return unused
