"""gather_rows on one process: every row once, in order, duplicates (by id) dropped."""

from __future__ import annotations

from mmctx.trainers.distributed import gather_rows


def test_one_process_keeps_the_first_row_of_each_id():
    rows = [{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "a", "v": 3}]
    assert gather_rows(rows, world_size=1) == [{"id": "a", "v": 1}, {"id": "b", "v": 2}]
