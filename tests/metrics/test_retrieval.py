"""Retrieval recall@k and caption groups (positives)."""

from __future__ import annotations

import pytest
import torch

from mmctx.metrics import caption_groups, recall_at_k


def test_recall_at_k_by_hand():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    positives = torch.tensor([[True, False, False], [False, False, True], [False, True, True]])
    # query 0: nearest is 0 (hit @1); query 1: order 1, 0|2 -> its positive 2 is last (hit @3 only);
    # query 2: order 0|1 (tie broken by topk), then 2 -> hit by @2
    recall = recall_at_k(query, gallery, positives, [1, 3])
    assert recall[3] == 1.0
    assert recall[1] in (pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert recall_at_k(query, gallery, torch.eye(3, dtype=torch.bool), [1])[1] == pytest.approx(2 / 3)



def test_caption_groups_are_equal_exactly_for_identical_texts_and_stable():
    groups = caption_groups(["a dog", "a cat", "a dog"])
    assert groups.dtype == torch.long and groups.shape == (3,)
    assert groups[0] == groups[2] and groups[0] != groups[1]
    assert torch.equal(caption_groups(["a dog"]), caption_groups(["a dog"]))  # no per-process salt
