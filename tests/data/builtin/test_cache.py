"""The cache protocol of the generated data sets: atomic swap, refusal of foreign folders,
stale temporary folders removed, generate-once under the lock."""

from __future__ import annotations

import json

import pytest

from mmctx.data.builtin.cache import STAMP, build_atomically, ensure, read_stamp, stamp_matches


def write(root, dataset="d", version=1, params=None):
    with build_atomically(root, dataset, {"a.txt", STAMP}) as tmp:
        (tmp / "a.txt").write_text(str(version))
        (tmp / STAMP).write_text(json.dumps({"dataset": dataset, "version": version, "params": params or {},
                                             "assets": "x"}))


def test_swap_is_atomic_and_a_failure_leaves_the_old_data(tmp_path):
    root = tmp_path / "data"
    write(root, version=1)
    (tmp_path / ".data.tmp-stale").mkdir()  # left by a killed run
    with pytest.raises(RuntimeError):
        with build_atomically(root, "d", {"a.txt", STAMP}) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert (root / "a.txt").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    write(root, version=2)
    assert (root / "a.txt").read_text() == "2" and read_stamp(root)["version"] == 2
    assert stamp_matches(root, 2, {}, "x", ["a.txt"]) and not stamp_matches(root, 1, {}, "x", ["a.txt"])
    assert not stamp_matches(root, 2, {}, "y", ["a.txt"]) and not stamp_matches(root, 2, {}, "x", ["b.txt"])


def test_foreign_folders_are_never_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match=r"not an mmctx d data set .* \['precious.txt'\]"):
        write(tmp_path / "mine")
    write(tmp_path / "other", dataset="e")  # another generated data set ...
    (tmp_path / "other" / "extra").write_text("")
    with pytest.raises(FileExistsError, match="refusing to replace"):  # ... is not ours to replace
        write(tmp_path / "other", dataset="d")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="not a folder"):
        write(tmp_path / "file")


def test_ensure_generates_only_when_out_of_date(tmp_path):
    root, calls = tmp_path / "data", []

    def generate():
        calls.append(1)
        write(root)
        return root

    up_to_date = lambda: stamp_matches(root, 1, {}, "x", ["a.txt"])  # noqa: E731
    assert ensure(root, up_to_date, generate) == root and ensure(root, up_to_date, generate) == root
    assert len(calls) == 1
