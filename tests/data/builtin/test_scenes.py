"""The embedded default data set: determinism, splits, labels, audio, regeneration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mmctx.data.builtin import scenes
from mmctx.data.builtin.asset_pack import AssetPack
from mmctx.data.builtin.scenes import (
    CATEGORIES,
    DEFAULT_CLASSES,
    POSITIONS,
    QUESTIONS,
    SPLITS,
    combination_split,
    ensure_default_dataset,
    generate_default_dataset,
    scene_caption,
)


def read_rows(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]


def test_split_sizes_files_and_classes(default_root: Path, small_sizes: dict[str, int]) -> None:
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        rows = read_rows(default_root, split)
        assert len(rows) == n
        for row in rows:
            for field in ("image", "audio", "caption_audio"):
                assert not Path(row[field]).is_absolute()
                assert (default_root / row[field]).is_file()
    assert json.loads((default_root / "classes.json").read_text()) == DEFAULT_CLASSES
    stamp = json.loads((default_root / "manifest_info.json").read_text())
    assert stamp["params"] == {**small_sizes, "image_size": 64, "sample_rate": 16000}
    assert stamp["counts"] == {"train": 40, "val": 10, "test": 10}


def test_same_seed_same_bytes_any_worker_count(
    default_root: Path, small_sizes: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scenes, "_MIN_PARALLEL", 0)  # force the 2-process pool
    again = generate_default_dataset(tmp_path / "again", **small_sizes, num_workers=2)
    for split in SPLITS:
        assert (again / f"{split}.jsonl").read_bytes() == (
            default_root / f"{split}.jsonl"
        ).read_bytes()
    for row in read_rows(default_root, "train")[:10]:
        assert (again / row["image"]).read_bytes() == (default_root / row["image"]).read_bytes()
        for field in ("audio", "caption_audio"):
            a, _ = sf.read(again / row[field], dtype="int16")
            b, _ = sf.read(default_root / row[field], dtype="int16")
            np.testing.assert_array_equal(a, b)


def test_other_seed_other_data(default_root: Path, small_sizes: dict[str, int], tmp_path: Path) -> None:
    other = generate_default_dataset(tmp_path / "other", **{**small_sizes, "seed": 1})
    assert (other / "train.jsonl").read_text() != (default_root / "train.jsonl").read_text()


def test_combinations_decide_the_split(default_root: Path) -> None:
    """Scenes of two or three objects: the combination decides the split (held out from
    training). One-object scenes are split by their draw, so objects are seen alone in every split."""
    combos = {
        split: {tuple(sorted(r["objects"])) for r in read_rows(default_root, split) if len(r["objects"]) > 1}
        for split in SPLITS
    }
    assert not combos["train"] & combos["test"]
    assert not combos["train"] & combos["val"]
    assert not combos["val"] & combos["test"]
    for split in SPLITS:
        for combo in combos[split]:
            assert combination_split(combo) == split
    # The hash is stable (SHA-256), not Python's salted hash(): pinned values.
    assert combination_split(["dog"]) == combination_split(("dog",))
    assert combination_split(["cat", "dog"]) == combination_split(["dog", "cat"])
    singles = [combination_split(["dog"], draw=i) for i in range(400)]
    assert all(0.05 < singles.count(s) / 400 < (0.9 if s == "train" else 0.16) for s in SPLITS)


def test_split_fractions_roughly_ten_percent() -> None:
    pack = AssetPack()
    names = [o.name for o in pack.objects]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i:]]
    share = {s: sum(combination_split(p) == s for p in pairs) / len(pairs) for s in SPLITS}
    assert 0.06 < share["test"] < 0.14 and 0.06 < share["val"] < 0.14


def test_labels_match_objects_and_question(default_root: Path) -> None:
    """The question names a category in the picture; the label is its object there."""
    pack = AssetPack()
    labels, counts = [], set()
    for split in SPLITS:
        for row in read_rows(default_root, split):
            categories = [pack.by_name[name].category for name in row["objects"]]
            n = len(row["objects"])
            assert 1 <= n <= 3 and len(set(categories)) == n  # different categories
            assert len(row["slots"]) == n and row["slots"] == sorted(row["slots"], key=POSITIONS.index)
            assert row["query_category"] in categories  # the question asks for something present
            assert row["label"] == row["objects"][categories.index(row["query_category"])]
            assert row["text"] == QUESTIONS[row["query_category"]] == f"what {row['query_category']}"
            assert row["caption"] == scene_caption(row["objects"], pack)
            assert len(row["boxes"]) == n
            for slot, (x0, _, x1, _) in zip(row["slots"], row["boxes"]):
                # each object lies inside its own third, so "left/middle/right" is unambiguous
                i = POSITIONS.index(slot)
                assert i * 64 / 3 <= x0 and x1 <= (i + 1) * 64 / 3 + 1e-9, row["boxes"]
            labels.append(row["label"])
            counts.add(n)
    assert set(labels) <= set(DEFAULT_CLASSES) and len(set(labels)) > 16
    assert [o.name for o in pack.objects] == DEFAULT_CLASSES and list(pack.categories) == CATEGORIES
    assert counts == {1, 2, 3}


def test_captions() -> None:
    pack = AssetPack()
    assert scene_caption(["dog", "banana", "dog"], pack) == "two dogs and a banana"
    assert scene_caption(["cat", "bus", "rose"], pack) == "a cat , a bus and a rose"
    assert scene_caption(["apple"], pack) == "an apple"
    assert scene_caption(["mouse", "mouse", "mouse"], pack) == "three mice"
    assert scene_caption(["cactus", "apple", "cactus"], pack) == "two cacti and an apple"


def test_images_and_audio(default_root: Path) -> None:
    for row in read_rows(default_root, "val"):
        with Image.open(default_root / row["image"]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
            assert np.asarray(im).std() > 5  # not a blank picture
        for field, min_seconds in (("audio", 0.8), ("caption_audio", 0.5)):
            info = sf.info(default_root / row[field])
            assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC"
            audio, _ = sf.read(default_root / row[field], dtype="float32")
            assert len(audio) / 16000 > min_seconds
            assert np.sqrt(np.mean(audio**2)) > 0.01  # speech, not silence
            assert np.abs(audio).max() <= 1.0


def test_ensure_skips_when_stamp_matches_and_redoes_when_params_change(tmp_path: Path) -> None:
    params = {"num_train": 6, "num_val": 2, "num_test": 2, "seed": 3}
    root = ensure_default_dataset(tmp_path / "d", **params)
    stamp, train = root / "manifest_info.json", root / "train.jsonl"
    before = (stamp.stat().st_mtime_ns, train.stat().st_mtime_ns)

    ensure_default_dataset(root, **params)
    assert (stamp.stat().st_mtime_ns, train.stat().st_mtime_ns) == before

    ensure_default_dataset(root, **{**params, "num_train": 7})
    assert json.loads(stamp.read_text())["params"]["num_train"] == 7
    assert len(train.read_text().splitlines()) == 7

    stamp.unlink()  # as if a run was killed before writing it
    ensure_default_dataset(root, **{**params, "num_train": 7})
    assert stamp.is_file()
    assert not list(tmp_path.glob(".d.tmp-*"))  # no temporary folders left behind


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "precious.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="precious.txt"):
        generate_default_dataset(root, num_train=2, num_val=1, num_test=1)
    assert (root / "precious.txt").read_text() == "user data"


def test_default_root_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MMCTX_DATA", str(tmp_path / "x"))
    assert scenes.default_data_root() == tmp_path / "x"
    monkeypatch.delenv("MMCTX_DATA")
    assert scenes.default_data_root().name == f"default-v{scenes.DATASET_VERSION}"
