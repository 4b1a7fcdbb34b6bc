"""The bad-input policy of the manifest loader: ``on_error="raise" | "skip"``.

One small folder holds good files and one bad case of each kind (real files written with
PIL and soundfile); each test builds a manifest over it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image, ImageFile

from mmctx.data import MultimodalDataModule
from mmctx.data.builtin.asset_pack import default_tokenizer_path
from mmctx.data.manifest import ManifestDataset, ManifestError
from mmctx.data.tokenization import load_tokenizer

CLASSES = ["cat", "dog"]
MODALITIES = ["image", "audio", "text"]
GOOD = {"image": "images/good.png", "audio": "audio/good.wav", "text": "a dog", "label": "dog"}
#: max_image_pixels of these tests: huge.png (200 x 200) is over it, the others are under.
PIXELS = 10_000


def _noise_png(path: Path, size: int) -> Path:
    # noise does not compress, so half the file really lacks half the pixel data
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def folder(tmp_path: Path, data_files: Any) -> Path:
    """``tmp_path/m`` with good files and one bad file of each kind (see the names)."""
    root = tmp_path / "m"
    data_files.image(root / "images" / "good.png", size=(16, 16))
    data_files.audio(root / "audio" / "good.wav", samples=1600)
    (root / "images" / "zero.png").write_bytes(b"")
    _cut_in_half(_noise_png(root / "images" / "trunc.png", 64))
    data_files.image(root / "images" / "tiny.png", size=(1, 1))
    data_files.image(root / "images" / "huge.png", size=(200, 200))
    (root / "audio" / "text.wav").write_text("this is not audio\n" * 20)
    data_files.audio(root / "audio" / "trunc.wav", samples=8000)
    _cut_in_half(root / "audio" / "trunc.wav")
    sf.write(root / "audio" / "trunc.flac", np.random.default_rng(0).uniform(-0.5, 0.5, 8000), 16000)
    _cut_in_half(root / "audio" / "trunc.flac")
    nan = np.full(1600, 0.1, dtype=np.float32)
    nan[100] = np.nan
    sf.write(root / "audio" / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = np.full(1600, 0.1, dtype=np.float32)
    inf[5] = np.inf
    sf.write(root / "audio" / "inf.wav", inf, 16000, subtype="FLOAT")
    # 0.1 s of stereo at 22.05 kHz, channels 0.5 and 0.1 (mono mean 0.3)
    for name in ("stereo_a", "stereo_b", "stereo_c"):
        data_files.audio(root / "audio" / f"{name}.wav", samples=2205, rate=22050, channels=2, value=(0.5, 0.1))
    data_files.audio(root / "audio" / "rate8k.wav", samples=800, rate=8000)
    data_files.audio(tmp_path / "outside.wav")
    return root


#: case -> (row, field, kind, reason in the message, found when the row is loaded)
CASES: dict[str, tuple[dict | str, str | None, str, str, bool]] = {
    "missing file": ({**GOOD, "image": "images/nope.png"}, "image", "file not found", "file not found: images/nope.png", False),
    "zero-byte image": ({**GOOD, "image": "images/zero.png"}, "image", "empty file", "file is empty (0 bytes)", False),
    "truncated png": ({**GOOD, "image": "images/trunc.png"}, "image", "unreadable image", "cannot read image", True),
    "1x1 image": ({**GOOD, "image": "images/tiny.png"}, "image", "image too small", "1x1 pixels", True),
    "huge image": ({**GOOD, "image": "images/huge.png"}, "image", "image too large", "200x200 = 40000 pixels > max_image_pixels=10000", True),
    "text as wav": ({**GOOD, "audio": "audio/text.wav"}, "audio", "unreadable audio", "cannot read audio", True),
    "truncated wav": ({**GOOD, "audio": "audio/trunc.wav"}, "audio", "truncated audio", "declares 16000 bytes", True),
    "truncated flac": ({**GOOD, "audio": "audio/trunc.flac"}, "audio", "unreadable audio", "cannot read audio", True),
    "nan audio": ({**GOOD, "audio": "audio/nan.wav"}, "audio", "non-finite audio", "1 NaN/Inf samples", True),
    "inf audio": ({**GOOD, "audio": "audio/inf.wav"}, "audio", "non-finite audio", "1 NaN/Inf samples", True),
    "empty text": ({**GOOD, "text": " \t "}, "text", "empty text", "empty or whitespace-only", False),
    "unknown label": ({**GOOD, "label": "cow"}, "label", "unknown label", 'unknown label "cow"', False),
    "malformed json": ('{"id": "x", "image": ', None, "malformed JSON", "malformed JSON", False),
    "duplicate id": ({**GOOD, "id": "g0"}, "id", "duplicate id", "duplicate id 'g0' (first on line 1)", False),
    "escaping path": ({**GOOD, "audio": "../outside.wav"}, "audio", "path escapes folder", "escapes the manifest folder", False),
}


def manifest(root: Path, bad: list[dict | str], good: int = 3, name: str = "train.jsonl") -> Path:
    """``good`` good rows (ids g0, g1, ...) and then the ``bad`` rows (ids b0, b1, ...)."""
    lines = [json.dumps({**GOOD, "id": f"g{i}"}) for i in range(good)]
    for i, row in enumerate(bad):
        lines.append(row if isinstance(row, str) else json.dumps({"id": f"b{i}", **row}))
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


def build(path: Path, **kwargs: Any) -> ManifestDataset:
    kwargs.setdefault("classes", CLASSES)
    kwargs.setdefault("max_image_pixels", PIXELS)
    return ManifestDataset(path, MODALITIES, tokenizer=load_tokenizer(default_tokenizer_path()), **kwargs)


# ---------------------------------------------------------------------- raise (default)


@pytest.mark.parametrize("case", list(CASES))
def test_raise_names_file_line_field_and_reason(case: str, folder: Path) -> None:
    row, field, kind, reason, at_load = CASES[case]
    path = manifest(folder, [row], good=2)  # the bad row is line 3
    if at_load:
        dataset = build(path)
        dataset[0], dataset[1]  # the good rows load
        with pytest.raises(ManifestError) as error:
            dataset[2]
    else:
        with pytest.raises(ManifestError) as error:
            build(path)
    message = str(error.value)
    prefix = f"{path}:3: field '{field}': " if field else f"{path}:3: "
    assert message.startswith(prefix), message
    assert reason in message, message
    assert (error.value.kind, error.value.line, error.value.field) == (kind, 3, field)


def test_huge_image_is_refused_before_decoding(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile) -> Any:
        decoded.append(Path(self.filename).name)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    dataset = build(manifest(folder, [CASES["huge image"][0]], good=1))
    dataset[0]
    assert set(decoded) == {"good.png"}  # the hook works (load runs again inside convert)
    with pytest.raises(ManifestError, match="image too large"):
        dataset[1]
    assert set(decoded) == {"good.png"}  # huge.png's header was read, its pixels never
    assert build(manifest(folder, [CASES["huge image"][0]], good=1), max_image_pixels=40_000)[1][
        "image"
    ].shape == (3, 64, 64)  # at the limit: allowed


def test_image_size_limits_are_arguments(folder: Path) -> None:
    path = manifest(folder, [CASES["1x1 image"][0]], good=1)
    assert build(path, min_image_size=1)[1]["image"].shape == (3, 64, 64)
    with pytest.raises(ManifestError, match=r"16x16 pixels, a side below min_image_size=17"):
        build(path, min_image_size=17)[0]


def test_large_jpeg_is_decoded_at_reduced_scale(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.new("RGB", (512, 384), (200, 30, 30)).save(folder / "images" / "big.jpg", quality=95)
    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recording_load(self: ImageFile.ImageFile) -> Any:
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    dataset = build(manifest(folder, [{**GOOD, "image": "images/big.jpg"}], good=0), max_image_pixels=10**6)
    image = dataset[0]["image"]
    assert set(sizes) == {(128, 96)}  # 1/4 scale: the smallest power of two still >= 64 on each side
    assert image.shape == (3, 64, 64)
    red = (200 / 255 - 0.485) / 0.229  # normalised red channel of the colour
    assert abs(image[0].mean().item() - red) < 0.05


def test_stereo_and_other_rates_resampled_and_logged_once(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [{**GOOD, "audio": f"audio/{n}.wav"} for n in ("stereo_a", "stereo_b", "stereo_c", "rate8k")]
    dataset = build(manifest(folder, rows, good=1))
    with caplog.at_level(logging.WARNING, logger="mmctx.data.manifest"):
        waves = [dataset[i]["audio"] for i in range(len(dataset))]
        dataset[2]  # again: no new message
    for wave in waves:
        assert wave.shape == (1600,) and wave.dtype == torch.float32  # 0.1 s, mono, 16 kHz
    for wave in waves[1:4]:
        middle = wave[400:1200]  # away from resampling edge effects
        torch.testing.assert_close(middle, torch.full_like(middle, 0.3), atol=2e-3, rtol=0)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("resampled from 22050 Hz to 16000 Hz (first at line 2)" in m for m in messages) == 1
    assert sum("resampled from 8000 Hz to 16000 Hz (first at line 5)" in m for m in messages) == 1
    assert sum("downmixed 2 channels to mono (first at line 2)" in m for m in messages) == 1
    assert len(messages) == 3, messages


def test_arguments_are_checked(folder: Path) -> None:
    path = manifest(folder, [])
    with pytest.raises(ValueError, match=r"on_error must be one of \['raise', 'skip'\], got 'ignore'"):
        build(path, on_error="ignore")
    with pytest.raises(ValueError, match=r"max_bad_fraction must be in \[0, 1\], got 1.5"):
        build(path, max_bad_fraction=1.5)
    with pytest.raises(ValueError, match="min_image_size"):
        build(path, min_image_size=0)


# ---------------------------------------------------------------------- skip


def test_skip_drops_exactly_the_bad_rows(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [CASES[case][0] for case in CASES]
    path = manifest(folder, rows, good=4)
    with caplog.at_level(logging.WARNING, logger="mmctx.data.manifest"):
        dataset = build(path, on_error="skip", max_bad_fraction=0.8)
    assert dataset.ids == ["g0", "g1", "g2", "g3"]
    assert [dataset.source(i) for i in range(4)] == [f"train.jsonl:{n}" for n in (1, 2, 3, 4)]
    assert dataset.total_rows == 4 + len(CASES)
    expected: dict[str, list[int]] = {}
    for line, (_, _, kind, _, _) in enumerate(CASES.values(), start=5):
        expected.setdefault(kind, []).append(line)
    assert {kind: len(messages) for kind, messages in dataset.skipped.items()} == {
        kind: len(lines) for kind, lines in expected.items()
    }
    for kind, lines in expected.items():  # the full messages, in file order
        assert [m.split(": ")[0] for m in dataset.skipped[kind]] == [f"{path}:{n}" for n in lines]
    for case, (_, _, kind, reason, _) in CASES.items():
        assert any(reason in m for m in dataset.skipped[kind]), case
    items = [dataset[i] for i in range(len(dataset))]  # every kept row loads
    assert all(item["image"].shape == (3, 64, 64) for item in items)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    summary = warnings[0]
    assert summary == dataset.skip_summary()
    assert f"skipped {len(CASES)} of {4 + len(CASES)} rows" in summary
    assert "2 unreadable audio" in summary and "2 non-finite audio" in summary
    assert "1 file not found" in summary and "1 image too large" in summary
    examples = summary.splitlines()[2:]
    assert len(examples) == 5
    assert [e.strip().split(": ")[0] for e in examples] == [f"{path}:{n}" for n in range(5, 10)]


@pytest.mark.parametrize("case", list(CASES))
def test_skip_each_case(case: str, folder: Path) -> None:
    row, field, kind, reason, _ = CASES[case]
    dataset = build(manifest(folder, [row], good=2), on_error="skip", max_bad_fraction=0.5)
    assert dataset.ids == ["g0", "g1"]
    assert list(dataset.skipped) == [kind]
    [message] = dataset.skipped[kind]
    assert ":3: " in message and reason in message
    assert (f"field '{field}'" in message) == (field is not None)


def test_duplicates_keep_the_first_row(folder: Path) -> None:
    rows = [{**GOOD, "id": "g1", "text": "second"}, {**GOOD, "id": "x", "image": "images/nope.png"}, {**GOOD, "id": "x"}]
    dataset = build(manifest(folder, rows, good=2), on_error="skip", max_bad_fraction=0.8)
    assert dataset.ids == ["g0", "g1"] and dataset.rows[1].text == "a dog"
    # line 4 owns id "x" though its file is missing: line 5 is a duplicate, not a stand-in
    assert dataset.skipped == {
        "duplicate id": [
            f"{dataset.manifest}:3: field 'id': duplicate id 'g1' (first on line 2)",
            f"{dataset.manifest}:5: field 'id': duplicate id 'x' (first on line 4)",
        ],
        "file not found": [f"{dataset.manifest}:4: field 'image': file not found: images/nope.png"],
    }


def test_too_many_bad_rows_fail_naming_the_counts(folder: Path) -> None:
    path = manifest(folder, [CASES["missing file"][0], CASES["nan audio"][0]], good=18)
    with pytest.raises(ManifestError) as error:
        build(path, on_error="skip")  # 2 of 20 = 10 % > the default 5 %
    message = str(error.value)
    assert error.value.kind == "too many bad rows" and error.value.line is None
    assert str(path) in message and "skipped 2 of 20 rows" in message
    assert "10.0% > max_bad_fraction=0.05" in message and "raise max_bad_fraction" in message
    assert "1 file not found" in message and "1 non-finite audio" in message
    assert f"{path}:19: field 'image': file not found" in message  # an example
    dataset = build(path, on_error="skip", max_bad_fraction=0.1)  # at the limit: allowed
    assert len(dataset) == 18 and sum(map(len, dataset.skipped.values())) == 2


def test_one_bad_row_in_twenty_passes_the_default_limit(folder: Path) -> None:
    dataset = build(manifest(folder, [CASES["empty text"][0]], good=19), on_error="skip")
    assert len(dataset) == 19 and dataset.skipped == {"empty text": [dataset.skipped["empty text"][0]]}


def test_every_row_bad_is_an_error(folder: Path) -> None:
    path = manifest(folder, [CASES["missing file"][0], CASES["malformed json"][0]], good=0)
    with pytest.raises(ManifestError, match="every row is bad") as error:
        build(path, on_error="skip", max_bad_fraction=1.0)
    assert error.value.kind == "no good rows" and "skipped 2 of 2 rows" in str(error.value)


def test_consistency_stays_an_error(folder: Path) -> None:
    unlabelled = {k: v for k, v in GOOD.items() if k != "label"}
    with pytest.raises(ManifestError, match="missing label") as error:
        build(manifest(folder, [unlabelled], good=2), on_error="skip", max_bad_fraction=1.0)
    assert (error.value.kind, error.value.line, error.value.field) == ("missing label", 3, "label")


def test_inferred_classes_come_from_the_kept_rows(folder: Path) -> None:
    rows = [{**GOOD, "label": "cow", "image": "images/trunc.png"}, {**GOOD, "label": True}]
    dataset = build(manifest(folder, rows, good=2), classes=None, on_error="skip", max_bad_fraction=0.5)
    assert dataset.classes == ["dog"] and [dataset[i]["label"] for i in range(2)] == [0, 0]
    assert set(dataset.skipped) == {"unreadable image", "bad label"}


def test_no_warning_and_no_file_check_without_bad_rows(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = manifest(folder, [{**GOOD, "image": "images/trunc.png"}], good=2)
    with caplog.at_level(logging.WARNING):
        assert len(build(path)) == 3  # raise: nothing decoded up front
    assert caplog.records == []
    dataset = build(manifest(folder, [], good=2), on_error="skip")
    assert dataset.skipped == {} and dataset.skip_summary().endswith("no row skipped (of 2)")


def test_error_attributes_survive_pickling(folder: Path) -> None:
    import pickle

    with pytest.raises(ManifestError) as error:
        build(manifest(folder, [CASES["unknown label"][0]], good=1))
    copy = pickle.loads(pickle.dumps(error.value))
    assert (str(copy), copy.kind, copy.line, copy.field) == (
        str(error.value),
        "unknown label",
        2,
        "label",
    )


# ---------------------------------------------------------------------- data module


def test_datamodule_with_skip_loads_only_good_rows(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = [CASES[c][0] for c in ("missing file", "truncated png", "nan audio", "unknown label")]
    train = manifest(folder, bad, good=6)
    val = manifest(folder, [CASES["text as wav"][0]], good=3, name="val.jsonl")
    (folder / "classes.json").write_text(json.dumps(CLASSES))
    kwargs = dict(train_manifest=str(train), val_manifest=str(val), modalities=MODALITIES, batch_size=4, num_workers=0,
                  tokenizer="builtin")
    with pytest.raises(ManifestError, match=r"train\.jsonl:7: field 'image': file not found"):
        MultimodalDataModule(**kwargs).setup("fit")  # on_error="raise" by default

    dm = MultimodalDataModule(**kwargs, on_error="skip", max_bad_fraction=0.5, image_size=32)
    assert dm.hparams["on_error"] == "skip" and dm.hparams["max_bad_fraction"] == 0.5
    with caplog.at_level(logging.WARNING, logger="mmctx.data.manifest"):
        dm.setup("fit")
    assert len(dm.datasets["train"]) == 6 and len(dm.datasets["val"]) == 3
    assert {k: len(v) for k, v in dm.datasets["train"].skipped.items()} == {
        "file not found": 1,
        "unreadable image": 1,
        "non-finite audio": 1,
        "unknown label": 1,
    }
    assert len(caplog.records) == 2  # one summary per split
    batches = list(dm.train_dataloader())
    assert sorted(i for b in batches for i in b.ids) == [f"g{i}" for i in range(6)]
    assert batches[0].inputs["image"].data.shape == (4, 3, 32, 32)
    assert torch.isfinite(batches[0].inputs["audio"].data).all()
    assert next(iter(dm.val_dataloader())).ids == ["g0", "g1", "g2"]


def test_datamodule_infers_classes_with_one_check_pass(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train = manifest(folder, [{**GOOD, "label": "cow", "audio": "audio/nan.wav"}], good=3)
    with caplog.at_level(logging.WARNING, logger="mmctx.data.manifest"):
        dm = MultimodalDataModule(
            train_manifest=str(train), modalities=MODALITIES, num_workers=0, on_error="skip", max_bad_fraction=0.5,
            tokenizer="builtin",
        )
        assert dm.classes == ["dog"]  # "cow" is only on the dropped row
        dm.setup("fit")
    assert len(caplog.records) == 1  # the train split was built (and checked) once
    assert len(dm.datasets["train"]) == 3


def test_datamodule_checks_on_error() -> None:
    with pytest.raises(ValueError, match="on_error must be one of"):
        MultimodalDataModule(train_manifest="x.jsonl", on_error="warn")
