"""StackedEncoder: an encoder followed by a context encoder over its own tokens."""

from __future__ import annotations

import pytest
import torch

from mmctx.context import ContextEncoder, RecurrentMemoryEncoder, StackedEncoder
from mmctx.encoders import TextTransformerEncoder
from mmctx.types import ExtendedContext, Tokens


def text_batch(B: int = 3, T: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(1, 20, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 25:] = False
    mask[2, 9:] = False
    return data, mask


def build(kind: str) -> StackedEncoder:
    torch.manual_seed(0)
    embed = TextTransformerEncoder(20, dim=16, num_layers=0, max_seq_len=64)
    if kind == "sliding":
        context = ContextEncoder(16, num_layers=2, num_heads=2, window=4, num_global_tokens=2)
    else:
        context = RecurrentMemoryEncoder(16, num_layers=1, num_heads=2, segment_len=8, num_memory=2, bptt_segments=2)
    return StackedEncoder(embed, context)


@pytest.mark.parametrize("kind", ["sliding", "memory"])
def test_shapes_padding_invariance_and_gradients(kind: str) -> None:
    enc = build(kind)
    data, mask = text_batch()
    out = enc(data, mask)
    assert out.x.shape == (3, 40, 16) and torch.equal(out.mask, mask) and enc.out_dim == 16
    assert bool((out.x[~mask] == 0).all())
    # a sample encoded alone, without the batch's padding, gives the same real tokens
    alone = enc(data[2:, :9], mask[2:, :9])
    torch.testing.assert_close(alone.x[0], out.x[2, :9], atol=1e-5, rtol=1e-5)
    # changing padded ids changes nothing
    noisy = data.masked_fill(~mask, 7)
    torch.testing.assert_close(enc(noisy, mask).x, out.x)
    (out.x[mask] ** 2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_windowed_context_encoder_takes_tokens_and_extended_context_alike() -> None:
    torch.manual_seed(0)
    enc = ContextEncoder(16, num_layers=1, num_heads=2, window=3, num_global_tokens=1).eval()
    x = torch.randn(2, 12, 16)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 8:] = False
    from_tokens = enc(Tokens(x, mask))
    from_context = enc(ExtendedContext(x, mask, torch.zeros(2, 12, dtype=torch.long), ("text",)))
    assert isinstance(from_tokens, Tokens)
    torch.testing.assert_close(from_tokens.x, from_context.x)
    with pytest.raises(TypeError, match="ExtendedContext or Tokens"):
        enc(x)


def test_widths_must_agree() -> None:
    embed = TextTransformerEncoder(20, dim=16, num_layers=0)
    with pytest.raises(ValueError, match="context.dim=8 but encoder.out_dim=16"):
        StackedEncoder(embed, ContextEncoder(8, num_layers=1, num_heads=2, window=2))


@pytest.mark.slow
def test_stacked_sliding_encoder_learns_to_find_the_key_sentence() -> None:
    """End to end on the long-range task's text (short documents, text only): embeddings +
    a sliding-window layer + an attention-pooling head learn to read the colour of the one
    key sentence among distractor facts, far above chance (1 in 4)."""
    from mmctx.data.builtin.long_range import LONG_RANGE_COLOURS, long_range_tokenizer, make_sample
    from mmctx.fusion import ConcatFusion
    from mmctx.heads import ClassifierHead
    from mmctx.models import FusionModel
    from mmctx.types import ModalityInput

    tok = long_range_tokenizer()

    def batch(split: str, n: int) -> tuple[dict[str, ModalityInput], torch.Tensor]:
        samples = [make_sample(f"stacked-test:{split}:{i}", 64, 160) for i in range(n)]
        ids = [tok.encode(s.text) for s in samples]
        T = max(map(len, ids))
        data = torch.zeros(n, T, dtype=torch.long)
        mask = torch.zeros(n, T, dtype=torch.bool)
        for b, row in enumerate(ids):
            data[b, : len(row)] = torch.tensor(row)
            mask[b, : len(row)] = True
        colours = torch.tensor([LONG_RANGE_COLOURS.index(s.colour) for s in samples])
        return {"text": ModalityInput(data, mask)}, colours

    torch.manual_seed(0)
    text = StackedEncoder(
        TextTransformerEncoder(tok.vocab_size, dim=16, num_layers=0, max_seq_len=256),
        ContextEncoder(16, num_layers=1, num_heads=2, window=4, mlp_ratio=2.0),
    )
    model = FusionModel({"text": text}, ConcatFusion({"text": 16}, 16), ClassifierHead(16, 4, pooling="attention", num_heads=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train = [batch(f"train{k}", 32) for k in range(8)]
    for step in range(200):
        inputs, y = train[step % len(train)]
        loss = torch.nn.functional.cross_entropy(model(inputs), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    inputs, y = batch("test", 128)
    with torch.no_grad():
        accuracy = (model.eval()(inputs).argmax(-1) == y).float().mean().item()
    assert accuracy > 0.9, accuracy
