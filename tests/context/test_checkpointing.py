"""Activation checkpointing (``checkpoint_blocks``) gives the same loss and gradients as without.

Parametrized over every module with the switch: the transformer stack, the text encoder, the
context encoders (full, windowed, memory) and the wrappers (overlapping windows,
stacked). Dropout is on, so the test also checks that the recomputation
replays the dropout masks. A forward-call counter checks that the recomputation happened
(with the switch the checkpointed unit runs again in the backward pass).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from mmctx.context import (
    ContextEncoder,
    OverlappingWindowEncoder,
    RecurrentMemoryEncoder,
    StackedEncoder,
)
from mmctx.encoders import TextTransformerEncoder
from mmctx.layers import TransformerBlock, TransformerEncoder
from mmctx.types import Tokens

D, V, T = 16, 23, 40


def _text(ckpt: bool, max_seq_len: int = 64) -> TextTransformerEncoder:
    return TextTransformerEncoder(V, D, 2, 2, 2.0, dropout=0.1, max_seq_len=max_seq_len, checkpoint_blocks=ckpt)


# name -> (builder(ckpt) -> module, input kind, checkpointed unit type)
BUILDERS: dict[str, tuple[Callable[[bool], nn.Module], str, type]] = {
    "transformer_encoder": (
        lambda c: TransformerEncoder(D, 2, 2, 2.0, dropout=0.1, checkpoint_blocks=c), "x", TransformerBlock
    ),
    "transformer_encoder_window": (
        lambda c: TransformerEncoder(D, 2, 2, 2.0, dropout=0.1, window=4, num_global=1, checkpoint_blocks=c),
        "x",
        TransformerBlock,
    ),
    "text": (_text, "ids", TransformerBlock),
    "context_full": (lambda c: ContextEncoder(D, 2, 2, 2.0, dropout=0.1, checkpoint_blocks=c), "tokens", TransformerBlock),
    "context_sliding": (
        lambda c: ContextEncoder(D, 2, 2, 2.0, dropout=0.1, window=4, num_global_tokens=2, checkpoint_blocks=c),
        "tokens",
        TransformerBlock,
    ),
    "memory": (
        lambda c: RecurrentMemoryEncoder(
            D, 2, 2, segment_len=8, num_memory=2, bptt_segments=3, mlp_ratio=2.0, dropout=0.1, checkpoint_blocks=c
        ),
        "tokens",
        TransformerBlock,
    ),
    "overlapping_windows": (
        lambda c: OverlappingWindowEncoder(_text(False, 16), 16, 12, window_batch_size=2, checkpoint_blocks=c),
        "ids",
        TextTransformerEncoder,
    ),
    "stacked": (
        lambda c: StackedEncoder(
            _text(False), ContextEncoder(D, 1, 2, dropout=0.1, window=4, num_global_tokens=1), checkpoint_blocks=c
        ),
        "ids",
        TextTransformerEncoder,
    ),
}


def _inputs(kind: str) -> tuple:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(3, T, dtype=torch.bool)
    mask[1, 29:] = False  # a padded sample
    if kind == "ids":
        return torch.randint(0, V, (3, T), generator=g), mask
    x = torch.randn(3, T, D, generator=g)
    if kind == "x":
        return x, mask
    return (Tokens(x, mask),)


def _loss(module: nn.Module, kind: str, inputs: tuple) -> torch.Tensor:
    out = module(*inputs)
    x = out if kind == "x" else out.x
    return (x * torch.linspace(-1, 1, x.shape[-1])).pow(2).mean()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_checkpointing_same_loss_and_gradients(name: str) -> None:
    build, kind, unit = BUILDERS[name]
    torch.manual_seed(0)
    plain = build(False)
    ckpt = build(True)
    ckpt.load_state_dict(plain.state_dict())
    plain.train()
    ckpt.train()
    calls = {"plain": 0, "ckpt": 0}
    for key, module in (("plain", plain), ("ckpt", ckpt)):
        for sub in module.modules():
            if type(sub) is unit:
                sub.register_forward_pre_hook(lambda *_, k=key: calls.__setitem__(k, calls[k] + 1))

    losses = {}
    for key, module in (("plain", plain), ("ckpt", ckpt)):
        torch.manual_seed(123)  # the same dropout masks for both
        inputs = _inputs(kind)
        loss = _loss(module, kind, inputs)
        loss.backward()
        losses[key] = loss.detach()

    torch.testing.assert_close(losses["ckpt"], losses["plain"], rtol=1e-5, atol=1e-6)
    grads_plain = dict(plain.named_parameters())
    for pname, p in ckpt.named_parameters():
        q = grads_plain[pname]
        assert (p.grad is None) == (q.grad is None), pname
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=f"{name}: gradient of {pname}")
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ckpt.parameters())
    # the checkpointed units ran again in the backward pass (a pre-hook: the recomputation stops early)
    assert calls["plain"] > 0
    assert calls["ckpt"] > calls["plain"], calls


@pytest.mark.parametrize("name", ["transformer_encoder", "memory", "overlapping_windows"])
def test_checkpointing_off_without_grad(name: str) -> None:
    """Under no_grad (inference) nothing is recomputed and the output is the same."""
    build, kind, _ = BUILDERS[name]
    torch.manual_seed(0)
    plain, ckpt = build(False).eval(), build(True).eval()
    ckpt.load_state_dict(plain.state_dict())
    inputs = _inputs(kind)
    with torch.no_grad():
        a, b = _loss(plain, kind, inputs), _loss(ckpt, kind, inputs)
    torch.testing.assert_close(a, b)
