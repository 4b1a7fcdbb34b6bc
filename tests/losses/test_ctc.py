"""CTC auxiliary loss: targets are the words between BOS and EOS, the loss equals F.ctc_loss on
the present samples, a missing modality is left out, and a perfect alignment costs ~0."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmctx.losses import ctc_loss, ctc_targets


def test_ctc_targets_strip_bos_eos_and_padding():
    # bos=1, eos=2, pad=0
    ids = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 2, 0, 0, 0]])
    mask = ids != 0
    targets, lengths = ctc_targets(ids, mask)
    assert lengths.tolist() == [3, 1]
    assert targets[0, :3].tolist() == [5, 6, 7] and targets[1, :1].tolist() == [8]
    assert targets[1, 1:].eq(0).all()
    with pytest.raises(ValueError, match="BOS and EOS"):
        ctc_targets(torch.tensor([[1, 0]]), torch.tensor([[True, False]]))


def test_ctc_loss_matches_torch_on_present_samples_and_skips_missing_ones():
    torch.manual_seed(0)
    B, N, C, blank = 3, 12, 7, 6
    logits = torch.randn(B, N, C, requires_grad=True)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 9:] = False  # shorter clip
    mask[2] = False  # modality missing for sample 2
    targets = torch.tensor([[1, 2, 3], [4, 4, 0], [1, 0, 0]])
    lengths = torch.tensor([3, 2, 1])
    loss = ctc_loss(logits, mask, targets, lengths, blank)
    expected = F.ctc_loss(
        logits[:2].log_softmax(-1).transpose(0, 1), targets[:2], torch.tensor([12, 9]), lengths[:2], blank=blank
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert (logits.grad[2] == 0).all() and (logits.grad[1, 9:] == 0).all()  # missing sample, padding frames
    real = logits.grad[mask]  # (frames, C): every real frame gets a gradient
    assert (real.abs().sum(-1) > 0).all()
    # frames past the mask never matter
    with torch.no_grad():
        changed = logits.detach().clone()
        changed[1, 9:] = 100.0
    torch.testing.assert_close(ctc_loss(changed, mask, targets, lengths, blank), loss.detach())
    # no present sample: zero, still differentiable
    none = ctc_loss(logits, torch.zeros(B, N, dtype=torch.bool), targets, lengths, blank)
    assert none.item() == 0.0 and none.requires_grad


def test_ctc_loss_is_near_zero_for_a_perfect_alignment_and_names_bad_inputs():
    C, blank = 5, 4
    path = [0, blank, 1, 1, blank, 2]  # collapses to 0 1 2
    logits = torch.full((1, len(path), C), -20.0)
    logits[0, torch.arange(len(path)), torch.tensor(path)] = 20.0
    loss = ctc_loss(logits, torch.ones(1, len(path), dtype=torch.bool), torch.tensor([[0, 1, 2]]), torch.tensor([3]), blank)
    assert loss.item() < 1e-3
    with pytest.raises(ValueError, match="blank=9"):
        ctc_loss(logits, torch.ones(1, len(path), dtype=torch.bool), torch.tensor([[0]]), torch.tensor([1]), 9)
    with pytest.raises(ValueError, match="ctc_loss mask"):
        ctc_loss(logits, torch.ones(1, 3, dtype=torch.bool), torch.tensor([[0]]), torch.tensor([1]), blank)
