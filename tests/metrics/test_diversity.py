"""group_diversity: mean pairwise RMS distance within groups, averaged over groups."""

from __future__ import annotations

import math

import pytest
import torch

from mmctx.metrics import group_diversity


def test_hand_computed_values():
    # group 0: (0,0,0,0) and (2,2,2,2): RMS distance 2; group 1: three copies of one sample: 0
    # group 2: a single sample, left out
    x = torch.tensor([[0.0, 0, 0, 0], [2, 2, 2, 2], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [5, 5, 5, 5]])
    assert group_diversity(x, [0, 0, 1, 1, 1, 2]) == pytest.approx(1.0, abs=1e-6)
    assert group_diversity(x[:2].view(2, 2, 2), [7, 7]) == pytest.approx(2.0, abs=1e-6)  # any sample shape


def test_no_pair_is_nan_and_bad_groups_are_named():
    assert math.isnan(group_diversity(torch.zeros(2, 3), [0, 1]))
    with pytest.raises(ValueError, match="3 group ids for 2 samples"):
        group_diversity(torch.zeros(2, 3), [0, 0, 1])
