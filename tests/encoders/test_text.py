"""TextTransformerEncoder specifics: input checks, RoPE positions over real tokens."""

from __future__ import annotations

import pytest
import torch

from mmctx.encoders import TextTransformerEncoder
from mmctx.layers import lengths_to_mask


def _encoder(**overrides: object) -> TextTransformerEncoder:
    torch.manual_seed(0)
    args: dict = dict(vocab_size=20, dim=16, num_layers=1, num_heads=2, max_seq_len=8)
    args.update(overrides)
    return TextTransformerEncoder(**args).eval()


def test_attributes() -> None:
    enc = _encoder(pad_id=3)
    assert enc.out_dim == 16 and enc.max_seq_len == 8 and enc.pad_id == 3


@pytest.mark.parametrize(
    ("data", "mask", "match"),
    [
        (torch.zeros(2, 3, 4, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool), "text data"),
        (torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool), "text mask"),
        (torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), "text mask.*bool"),
        (torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), "text data.*integer"),
        (torch.zeros(2, 9, dtype=torch.long), torch.ones(2, 9, dtype=torch.bool), "max_seq_len=8"),
        (torch.tensor([[1, 20, 2]]), torch.ones(1, 3, dtype=torch.bool), "token id 20 .*vocab_size=20"),
        (torch.tensor([[1, -1, 2]]), torch.ones(1, 3, dtype=torch.bool), "token id -1"),
    ],
)
def test_bad_inputs_raise(data: torch.Tensor, mask: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _encoder()(data, mask)


def test_bad_constructor_arguments_raise() -> None:
    with pytest.raises(ValueError, match="pad_id"):
        _encoder(pad_id=20)
    with pytest.raises(ValueError, match="divisible"):
        _encoder(num_heads=3)


def test_out_of_vocab_ids_at_padding_are_ignored() -> None:
    enc = _encoder()
    data = torch.tensor([[1, 2, 999]])
    out = enc(data, torch.tensor([[True, True, False]]))
    assert out.mask.tolist() == [[True, True, False]]


def test_left_and_right_padding_give_the_same_tokens() -> None:
    enc = _encoder()
    ids = torch.tensor([[4, 5, 6, 7]])
    right = enc(torch.tensor([[4, 5, 6, 7, 0, 0]]), lengths_to_mask(torch.tensor([4]), 6))
    left = enc(torch.tensor([[0, 0, 4, 5, 6, 7]]), torch.tensor([[False, False, True, True, True, True]]))
    alone = enc(ids, torch.ones(1, 4, dtype=torch.bool))
    torch.testing.assert_close(right.x[0, :4], alone.x[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(left.x[0, 2:], alone.x[0], atol=1e-5, rtol=0)


def test_positions_matter() -> None:
    enc = _encoder()
    mask = torch.ones(1, 3, dtype=torch.bool)
    a = enc(torch.tensor([[4, 5, 6]]), mask).x
    b = enc(torch.tensor([[6, 5, 4]]), mask).x
    assert not torch.allclose(a[0, 1], b[0, 1], atol=1e-4), "the middle token must see order"
