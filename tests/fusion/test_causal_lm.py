"""Gated cross-attention injected into tiny random-init GPT-2 and Llama causal LMs (no network)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from mmctx.fusion import CrossAttendingDecoderLayer, MultimodalCausalLM, find_decoder_layers
from mmctx.types import ExtendedContext

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, CTX_DIM = 40, 12


def _base_lm(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if family == "gpt2":
        config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=16, n_layer=4, n_head=2,
                            bos_token_id=1, eos_token_id=2, pad_token_id=0)
        lm = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                             bos_token_id=1, eos_token_id=2, pad_token_id=0)
        lm = LlamaForCausalLM(config)
    return lm.eval()


def _context(batch: int = 2, n: int = 5, seed: int = 1, pad: int = 0, garbage: float = 0.0) -> ExtendedContext:
    """Random context; sample 1 has 2 padded positions; ``pad`` extra masked positions of ``garbage``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, CTX_DIM, generator=g)
    mask = torch.ones(batch, n, dtype=torch.bool)
    mask[1, -2:] = False
    x[1, -2:] = garbage
    if pad:
        x = torch.cat([x, torch.full((batch, pad, CTX_DIM), garbage)], dim=1)
        mask = torch.cat([mask, torch.zeros(batch, pad, dtype=torch.bool)], dim=1)
    return ExtendedContext(x, mask, torch.zeros_like(mask, dtype=torch.long), ("image",))


def _ids(batch: int = 2, t: int = 6, seed: int = 2) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, t), generator=torch.Generator().manual_seed(seed))


def _nudge_gates(model: MultimodalCausalLM, value: float = 0.7) -> None:
    """Open the gates so the context matters (at 0 the LM ignores it)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("attn_gate") or name.endswith("ff_gate"):
                p.fill_(value)


FAMILIES = ["gpt2", "llama"]


@pytest.mark.parametrize("family", FAMILIES)
def test_finds_decoder_layers_generically(family):
    lm = _base_lm(family)
    path, layers = find_decoder_layers(lm)
    assert path == {"gpt2": "transformer.h", "llama": "model.layers"}[family]
    assert len(layers) == 4
    model = MultimodalCausalLM(lm, CTX_DIM, every=2, first=1)
    assert model.injected_layers == (1, 3)
    wrapped = [isinstance(m, CrossAttendingDecoderLayer) for m in lm.get_submodule(path)]
    assert wrapped == [False, True, False, True]
    with pytest.raises(ValueError, match="already"):
        MultimodalCausalLM(lm, CTX_DIM)


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_the_lm_at_init(family):
    lm = _base_lm(family)
    ids, mask = _ids(), torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0  # left padding
    with torch.no_grad():
        ref = lm(input_ids=ids, attention_mask=mask).logits
        model = MultimodalCausalLM(copy.deepcopy(lm), CTX_DIM, every=1)
        out = model(ids, _context(), attention_mask=mask).logits
        text_only = model(ids, None, attention_mask=mask).logits
    assert torch.equal(out, ref)
    assert torch.equal(text_only, ref)
    _nudge_gates(model)
    with torch.no_grad():
        assert not torch.allclose(model(ids, _context(), attention_mask=mask).logits, ref)


@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_lm_stays_while_injected_blocks_train(family):
    model = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2)
    model.train()
    lm_names = {n for n, _ in model.lm.named_parameters() if ".xattn." not in n}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in model.injected_parameters()}
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    ids = _ids()
    for _ in range(4):
        loss = model(ids, _context(), labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = dict(model.named_parameters())
    for n in before:
        lm_param = n.removeprefix("lm.") in lm_names
        if lm_param:
            assert torch.equal(after[n], before[n]), n
    moved = [n for n in before if not torch.equal(after[n], before[n])]
    assert any(n.endswith("attn_gate") for n in moved) and any(n.endswith("ff_gate") for n in moved)
    assert any(".xattn.attn." in n for n in moved) and any(n.startswith("context_proj") for n in moved)


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_with_cache_equals_without(family):
    model = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=1)
    _nudge_gates(model)
    prompt, ctx = _ids(t=3), _context()
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    cached = model.generate(prompt, ctx, use_cache=True, **kw)
    uncached = model.generate(prompt, ctx, use_cache=False, **kw)
    assert cached.shape == (2, 9)
    assert torch.equal(cached, uncached)
    # the context matters once the gates are open
    other = model.generate(prompt, _context(seed=7), use_cache=True, **kw)
    text_only = model.lm.generate(input_ids=prompt, **kw)
    assert not (torch.equal(other, cached) and torch.equal(text_only, cached))


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_and_sampling_shapes(family):
    model = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2)
    _nudge_gates(model)
    prompt, ctx = _ids(t=3), _context()
    kw = dict(max_new_tokens=5, min_new_tokens=5, eos_token_id=None, pad_token_id=0)
    beams = model.generate(prompt, ctx, num_beams=3, num_return_sequences=2, **kw)
    assert beams.shape == (4, 8)
    torch.manual_seed(0)
    sampled = model.generate(prompt, ctx, do_sample=True, top_k=5, **kw)
    assert sampled.shape == (2, 8)
    # beam search through the context manager on the LM's own generate
    with model.attend(ctx):
        again = model.lm.generate(input_ids=prompt, num_beams=3, num_return_sequences=2, **kw)
    assert torch.equal(again, beams)


@pytest.mark.parametrize("family", FAMILIES)
def test_context_padding_never_changes_generation(family):
    model = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=1)
    _nudge_gates(model)
    prompt = _ids(t=3)
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    base = model.generate(prompt, _context(), **kw)
    padded = model.generate(prompt, _context(pad=4, garbage=1e4), **kw)
    assert torch.equal(base, padded)
    with torch.no_grad():
        a = model(prompt, _context()).logits
        b = model(prompt, _context(pad=4, garbage=-3e3)).logits
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_injected_then_load_into_fresh_base(family, tmp_path):
    model = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2, first=1)
    _nudge_gates(model)
    with torch.no_grad():
        for p in model.injected_parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = model.save_injected(tmp_path / "xattn.safetensors")
    lm_bytes = sum(p.numel() for p in model.lm.parameters()) * 4
    assert path.stat().st_size < lm_bytes  # the injected weights alone, not the LM
    ids, ctx = _ids(), _context()
    with torch.no_grad():
        ref = model(ids, ctx).logits
        fresh = MultimodalCausalLM.from_injected(_base_lm(family), path)
        assert fresh.injected_layers == (1, 3)
        torch.testing.assert_close(fresh(ids, ctx).logits, ref, rtol=0, atol=0)
        same = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2, first=1)
        same.load_injected(path)
        assert torch.equal(same(ids, ctx).logits, ref)
    with pytest.raises(ValueError, match="injected_layers"):
        MultimodalCausalLM(_base_lm(family), CTX_DIM, every=1).load_injected(path)
    with pytest.raises(ValueError, match="context_dim"):
        MultimodalCausalLM(_base_lm(family), CTX_DIM + 4, every=2, first=1).load_injected(path)


def test_load_refuses_a_different_base_lm(tmp_path):
    model = MultimodalCausalLM(_base_lm("llama"), CTX_DIM, every=2)
    path = model.save_injected(tmp_path / "x.safetensors")
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=24, intermediate_size=32, num_hidden_layers=4,
                         num_attention_heads=2, num_key_value_heads=1)
    with pytest.raises(ValueError, match="hidden_size"):
        MultimodalCausalLM(LlamaForCausalLM(config), CTX_DIM, every=2).load_injected(path)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=6,
                         num_attention_heads=2, num_key_value_heads=1)
    with pytest.raises(ValueError, match="num_lm_layers"):
        MultimodalCausalLM(LlamaForCausalLM(config), CTX_DIM, every=2).load_injected(path)


@pytest.mark.parametrize("freeze_lm", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_passes_through(family, freeze_lm):
    model = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2, freeze_lm=freeze_lm)
    _nudge_gates(model, 0.3)
    enable = getattr(model.lm, "activation_checkpointing_enable", None) or model.lm.gradient_checkpointing_enable
    enable()
    path, layers = find_decoder_layers(model.lm)
    inner = [m.layer if isinstance(m, CrossAttendingDecoderLayer) else m for m in layers]
    assert all(m.gradient_checkpointing for m in inner)
    model.train()
    ids = _ids()
    loss = model(ids, _context(), labels=ids).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for n, g in grads.items() if "xattn" in n or "context_proj" in n)
    assert grads["context_proj.weight"].abs().sum() > 0
    # the same gradients as without checkpointing
    ref = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2, freeze_lm=freeze_lm)
    ref.load_state_dict(model.state_dict())
    ref.train()
    ref(ids, _context(), labels=ids).loss.backward()
    for n, p in ref.named_parameters():
        if grads[n] is not None:
            torch.testing.assert_close(grads[n], p.grad, atol=1e-5, rtol=1e-4)


def test_context_batch_must_divide_the_lm_batch():
    model = MultimodalCausalLM(_base_lm("llama"), CTX_DIM)
    with pytest.raises(ValueError, match="multiple"):
        model(_ids(batch=3), _context(batch=2))
    with pytest.raises(ValueError, match="context_dim"):
        model(_ids(), ExtendedContext(torch.zeros(2, 3, 5), torch.ones(2, 3, dtype=torch.bool),
                                      torch.zeros(2, 3, dtype=torch.long)))


def test_deepcopy_keeps_one_shared_context_and_unwrap_restores_the_lm():
    lm = _base_lm("gpt2")
    keys = set(lm.state_dict())
    model = MultimodalCausalLM(lm, CTX_DIM, every=2)
    _nudge_gates(model)
    twin = copy.deepcopy(model)
    ids, ctx = _ids(), _context()
    with torch.no_grad():
        assert torch.equal(twin(ids, ctx).logits, model(ids, ctx).logits)
        with twin.attend(ctx):  # the copy's wrappers read the copy's context, not the original's
            assert model._slot.x is None
    restored = model.unwrap()
    assert set(restored.state_dict()) == keys
    assert not any(isinstance(m, CrossAttendingDecoderLayer) for m in restored.modules())


# -- blocks with their own causal self-attention (self_attention=True) -------------------


def _open_all_gates(model: MultimodalCausalLM, value: float = 0.7) -> None:
    """Open every gate: cross-attention, feed-forward and the blocks' self-attention."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gate"):
                p.fill_(value)


@pytest.mark.parametrize("family", FAMILIES)
def test_self_attention_blocks_exact_at_init_and_cached_generate(family):
    lm = _base_lm(family)
    ids, mask = _ids(), torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0  # left padding
    with torch.no_grad():
        ref = lm(input_ids=ids, attention_mask=mask).logits
        model = MultimodalCausalLM(copy.deepcopy(lm), CTX_DIM, every=1, self_attention=True)
        assert torch.equal(model(ids, _context(), attention_mask=mask).logits, ref)
        _open_all_gates(model)
        with_sa = model(ids, _context(), attention_mask=mask).logits
        assert not torch.allclose(with_sa, ref)
        # the self-attention matters: closing only its gates changes the logits
        for wrapper in model._wrappers().values():
            wrapper.causal_attn.gate.zero_()
        assert not torch.allclose(model(ids, _context(), attention_mask=mask).logits, with_sa)
    _open_all_gates(model)
    prompt, ctx = _ids(t=3), _context()
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    for extra in ({}, {"num_beams": 3}):  # beams reorder the self-attention's cache layers too
        cached = model.generate(prompt, ctx, use_cache=True, **kw, **extra)
        uncached = model.generate(prompt, ctx, use_cache=False, **kw, **extra)
        assert cached.shape == (2, 9)
        assert torch.equal(cached, uncached)


@pytest.mark.parametrize("family", FAMILIES)
def test_self_attention_ignores_left_padding_of_the_prompt(family):
    model = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=1, self_attention=True)
    _open_all_gates(model)
    prompt, ctx = _ids(t=3), _context()
    padded, mask = prompt.clone(), torch.ones(2, 3, dtype=torch.long)
    padded[1, 0], mask[1, 0] = 0, 0  # sample 1's prompt is its last two tokens, left-padded
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    batch = model.generate(padded, ctx, attention_mask=mask, **kw)
    alone = model.generate(prompt[1:, 1:], ExtendedContext(ctx.x[1:], ctx.mask[1:], ctx.modality[1:], ctx.names), **kw)
    assert torch.equal(batch[1, 1:], alone[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_self_attention_blocks_save_and_load(family, tmp_path):
    model = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2, self_attention=True)
    _open_all_gates(model)
    assert any(k.startswith("layers.0.causal_attn.") for k in model.injected_state_dict())
    path = model.save_injected(tmp_path / "xattn.safetensors")
    ids, ctx = _ids(), _context()
    with torch.no_grad():
        fresh = MultimodalCausalLM.from_injected(_base_lm(family), path)
        assert fresh.self_attention
        assert torch.equal(fresh(ids, ctx).logits, model(ids, ctx).logits)
    with pytest.raises(ValueError, match="self_attention"):
        MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2).load_injected(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_self_attention_blocks_under_gradient_checkpointing(family):
    model = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2, self_attention=True)
    _open_all_gates(model, 0.3)
    ref = copy.deepcopy(model)
    enable = getattr(model.lm, "activation_checkpointing_enable", None) or model.lm.gradient_checkpointing_enable
    enable()
    ids = _ids()
    for m in (model, ref):
        m.train()
        torch.manual_seed(0)  # the same dropout masks (GPT-2 has dropout)
        m(ids, _context(), labels=ids).loss.backward()
    got, want = dict(model.named_parameters()), dict(ref.named_parameters())
    sa = [n for n in want if ".causal_attn." in n]
    assert sa and all(want[n].grad is not None and want[n].grad.abs().sum() > 0 for n in sa)
    for n, p in want.items():
        if p.grad is not None:
            torch.testing.assert_close(got[n].grad, p.grad, atol=1e-5, rtol=1e-4, msg=n)


# -- partial unfreezing (trainable_lm_layers) --------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_trainable_lm_layers_unfreezes_the_last_layers_and_final_norm_only(family):
    model = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2, trainable_lm_layers=1)
    model.train()
    path, layers = find_decoder_layers(model.lm)
    last = layers[3].layer if isinstance(layers[3], CrossAttendingDecoderLayer) else layers[3]
    last_ids = {id(p) for p in last.parameters()}
    final_norm = model.lm.get_submodule({"gpt2": "transformer.ln_f", "llama": "model.norm"}[family])
    unfrozen = last_ids | {id(p) for p in final_norm.parameters()}
    injected = {id(p) for p in model.injected_parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == unfrozen | injected
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = _ids()
    for _ in range(3):
        loss = model(ids, _context(), labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        moved = not torch.equal(p, before[n])
        if id(p) in unfrozen:
            assert moved, n
        elif id(p) not in injected:
            assert not moved, n  # every other LM weight (embeddings, lm_head, earlier layers) stays
    with pytest.raises(ValueError, match="trainable_lm_layers"):
        MultimodalCausalLM(_base_lm(family), CTX_DIM, trainable_lm_layers=5)
    with pytest.raises(ValueError, match="frozen"):
        MultimodalCausalLM(_base_lm(family), CTX_DIM, freeze_lm=False, trainable_lm_layers=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_train_lm_head_unfreezes_the_output_embeddings_only(family):
    model = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2, train_lm_head=True)
    head = model.lm.get_output_embeddings().weight
    injected = {id(p) for p in model.injected_parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == injected | {id(head)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    ids = _ids()
    for _ in range(2):
        loss = model(ids, _context(), labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        if p is head:
            assert not torch.equal(p, before[n]), n
        elif id(p) not in injected:
            assert torch.equal(p, before[n]), n  # GPT-2 ties lm_head to wte: one parameter, counted as the head
    with pytest.raises(ValueError, match="frozen"):
        MultimodalCausalLM(_base_lm(family), CTX_DIM, freeze_lm=False, train_lm_head=True)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("unfreeze", [{"train_lm_head": True}, {"trainable_lm_layers": 1}])
def test_partly_unfrozen_lm_weights_travel_with_the_injected_file(family, unfreeze, tmp_path):
    model = MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2, **unfreeze)
    assert model.trained_lm_names  # the unfrozen LM weights are known by name
    _nudge_gates(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))  # injected blocks AND the unfrozen LM weights move
    path = model.save_injected(tmp_path / "x.safetensors")
    lm_bytes = sum(p.numel() for p in model.lm.parameters()) * 4
    assert path.stat().st_size < lm_bytes
    ids, ctx = _ids(), _context()
    with torch.no_grad():
        ref = model(ids, ctx).logits
        fresh = MultimodalCausalLM.from_injected(_base_lm(family), path)
        torch.testing.assert_close(fresh(ids, ctx).logits, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="train_lm_head|trainable_lm_layers"):
        MultimodalCausalLM(_base_lm(family), CTX_DIM, every=2).load_injected(path)
