"""CausalLMDecoder: a causal LM with injected cross-attention behind TextDecoder's interface."""

from __future__ import annotations

import pytest
import torch

from mmctx.heads import CausalLMDecoder
from mmctx.types import ExtendedContext

pytestmark = pytest.mark.usefixtures("one_thread")

SPECIAL = dict(vocab_size=30, pad_id=0, bos_id=1, eos_id=2)


def _context(batch: int = 3, n: int = 4, dim: int = 8) -> ExtendedContext:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, n, dtype=torch.bool)
    mask[-1, 2:] = False
    return ExtendedContext(torch.randn(batch, n, dim, generator=g), mask, torch.zeros(batch, n, dtype=torch.long))


def _decoder(**kw) -> CausalLMDecoder:
    torch.manual_seed(0)
    dec = CausalLMDecoder(8, dim=16, num_layers=2, num_heads=2, max_seq_len=32, **SPECIAL, **kw).eval()
    with torch.no_grad():  # open the gates so the context matters
        for name, p in dec.named_parameters():
            if name.endswith("gate"):  # attn_gate, ff_gate and the self-attention's gate
                p.fill_(0.5)
    return dec


def test_teacher_forced_logits_and_frozen_lm():
    dec = _decoder(freeze_lm=True)
    tokens = torch.tensor([[1, 5, 6, 7], [1, 8, 2, 0], [1, 9, 9, 2]])
    logits = dec(tokens, _context(), tokens != 0)
    assert logits.shape == (3, 4, SPECIAL["vocab_size"])
    trainable = {n for n, p in dec.named_parameters() if p.requires_grad}
    assert trainable and all(".xattn." in n or "context_proj" in n for n in trainable)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_generate_follows_the_text_decoder_contract(strategy):
    dec = _decoder()
    ids = dec.generate(_context(), max_new_tokens=6, strategy=strategy, num_beams=3, top_k=5,
                       generator=torch.Generator().manual_seed(0))
    assert ids.shape[0] == 3 and 1 <= ids.shape[1] <= 6
    assert not (ids == SPECIAL["bos_id"]).all(dim=1).any()
    for row in ids.tolist():  # only padding after an EOS
        if SPECIAL["eos_id"] in row:
            assert all(t == SPECIAL["pad_id"] for t in row[row.index(SPECIAL["eos_id"]) + 1:])
    if strategy == "sample":  # the generator makes sampling reproducible
        again = dec.generate(_context(), max_new_tokens=6, strategy="sample", top_k=5,
                             generator=torch.Generator().manual_seed(0))
        assert torch.equal(ids, again)


@pytest.mark.parametrize("self_attention", [False, True])
def test_greedy_with_cache_equals_without(self_attention):
    dec = _decoder(self_attention=self_attention)
    a = dec.generate(_context(), max_new_tokens=6, use_cache=True)
    b = dec.generate(_context(), max_new_tokens=6, use_cache=False)
    assert torch.equal(a, b)
    beams = dec.generate(_context(), max_new_tokens=6, strategy="beam", num_beams=3, use_cache=True)
    assert torch.equal(beams, dec.generate(_context(), max_new_tokens=6, strategy="beam", num_beams=3, use_cache=False))


def test_self_attention_and_partly_trainable_lm():
    dec = _decoder(freeze_lm=True, self_attention=True, trainable_lm_layers=1)
    trainable = {n for n, p in dec.named_parameters() if p.requires_grad}
    assert any(".causal_attn." in n for n in trainable)
    assert any(".layers.1.layer." in n for n in trainable) and not any(".layers.0.layer." in n for n in trainable)
    assert "model.lm.model.norm.weight" in trainable and "model.lm.model.embed_tokens.weight" not in trainable


def test_sizes_must_come_from_the_tokenizer_and_strategy_is_checked():
    with pytest.raises(ValueError, match="vocab_size, pad_id, bos_id, eos_id unset"):
        CausalLMDecoder(8)
    with pytest.raises(ValueError, match="strategy"):
        _decoder().generate(_context(), max_new_tokens=3, strategy="nucleus")
