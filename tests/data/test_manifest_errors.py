"""Every invalid manifest row fails with the manifest's name, the line and the field."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mmctx.data.builtin.asset_pack import default_tokenizer_path
from mmctx.data.manifest import ManifestDataset, ManifestError
from mmctx.data.tokenization import load_tokenizer

GOOD = {"id": "ok", "image": "images/a.png", "audio": "audio/a.wav", "text": "a dog", "label": "1"}
CLASSES = ["0", "1", "2", "3"]


def build(path: Path, **kwargs: Any) -> ManifestDataset:
    kwargs.setdefault("modalities", ["image", "audio", "text"])
    kwargs.setdefault("classes", CLASSES)
    return ManifestDataset(path, tokenizer=load_tokenizer(default_tokenizer_path()), **kwargs)


def assert_names(error: pytest.ExceptionInfo, line: int, field: str | None) -> None:
    message = str(error.value)
    assert "train.jsonl" in message
    assert re.search(rf"train\.jsonl:{line}\b", message), message
    if field is not None:
        assert f"field '{field}'" in message, message


BAD_ROWS: dict[str, tuple[dict | str, str | None, str]] = {
    "missing file": (
        {**GOOD, "id": "x", "image": "images/x.png"},
        "image",
        "file not found: images/x.png",
    ),
    "malformed json": ('{"id": "x", "image": ', None, "malformed JSON"),
    "not an object": ("[1, 2]", None, "expected a JSON object"),
    "unknown label": ({**GOOD, "id": "x", "label": "7"}, "label", "unknown label"),
    "bool label": ({**GOOD, "id": "x", "label": True}, "label", "string or an integer"),
    "escaping path": (
        {**GOOD, "id": "x", "audio": "../outside.wav"},
        "audio",
        "escapes the manifest folder",
    ),
    "absolute path elsewhere": ({**GOOD, "id": "x", "audio": "/etc/hostname"}, "audio", "escapes"),
    "duplicate id": ({**GOOD}, "id", "duplicate id 'ok' (first on line 1)"),
    "empty text": ({**GOOD, "id": "x", "text": "   "}, "text", "empty or whitespace-only"),
    "text not a string": ({**GOOD, "id": "x", "text": 5}, "text", "expected a string"),
    "path not a string": (
        {**GOOD, "id": "x", "image": ["a.png"]},
        "image",
        "non-empty path string",
    ),
    "folder as file": ({**GOOD, "id": "x", "image": "images"}, "image", "not a file"),
    "missing label": (
        {k: v for k, v in {**GOOD, "id": "x"}.items() if k != "label"},
        "label",
        "missing label",
    ),
    "no modality": (
        {"id": "x", "label": "1"},
        "image/audio/text",
        "none of the requested modalities",
    ),
}


#: The ``kind`` of each case's error (a stable key, used to count skipped rows).
BAD_KINDS: dict[str, str] = {
    "missing file": "file not found",
    "malformed json": "malformed JSON",
    "not an object": "not an object",
    "unknown label": "unknown label",
    "bool label": "bad label",
    "escaping path": "path escapes folder",
    "absolute path elsewhere": "path escapes folder",
    "duplicate id": "duplicate id",
    "empty text": "empty text",
    "text not a string": "bad text",
    "path not a string": "bad path",
    "folder as file": "not a file",
    "missing label": "missing label",
    "no modality": "no modality",
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_names_file_line_field(
    case: str, small_manifest: Callable[[list], Path], tmp_path: Path
) -> None:
    row, field, reason = BAD_ROWS[case]
    (tmp_path / "outside.wav").write_bytes(b"RIFF")
    path = small_manifest([GOOD, "", row])  # the blank line 2 is skipped, the bad row is line 3
    with pytest.raises(ManifestError) as error:
        build(path)
    assert_names(error, 3, field)
    assert reason in str(error.value)
    assert (error.value.kind, error.value.line, error.value.field) == (BAD_KINDS[case], 3, field)


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_skipped_with_its_kind(
    case: str, small_manifest: Callable[[list], Path], tmp_path: Path
) -> None:
    row, field, reason = BAD_ROWS[case]
    (tmp_path / "outside.wav").write_bytes(b"RIFF")
    path = small_manifest([GOOD, "", row, {**GOOD, "id": "y"}])
    if case == "missing label":  # labels on some rows only: an error in both modes
        with pytest.raises(ManifestError, match=reason):
            build(path, on_error="skip", max_bad_fraction=0.5)
        return
    dataset = build(path, on_error="skip", max_bad_fraction=0.5)
    assert dataset.ids == ["ok", "y"] and dataset.total_rows == 3
    assert list(dataset.skipped) == [BAD_KINDS[case]]
    [message] = dataset.skipped[BAD_KINDS[case]]
    assert re.search(r"train\.jsonl:3\b", message) and reason in message


def test_outside_paths_allowed_on_request(
    small_manifest: Callable[[list], Path], tmp_path: Path, data_files: Any
) -> None:
    data_files.audio(tmp_path / "outside.wav")
    path = small_manifest([GOOD, {**GOOD, "id": "x", "audio": "../outside.wav"}])
    data = build(path, allow_outside_root=True)
    assert data[1]["audio"].shape == (1600,)


def test_missing_manifest() -> None:
    with pytest.raises(ManifestError, match="nope.jsonl: manifest file not found"):
        build(Path("/nonexistent/nope.jsonl"))


def test_zero_byte_image_fails_at_construction(small_manifest: Callable[[list], Path]) -> None:
    path = small_manifest([GOOD, {**GOOD, "id": "x", "image": "images/empty.png"}])
    (path.parent / "images" / "empty.png").write_bytes(b"")
    with pytest.raises(ManifestError, match="empty") as error:
        build(path)
    assert_names(error, 2, "image")


def test_truncated_image_fails_when_read(
    small_manifest: Callable[[list], Path], data_files: Any
) -> None:
    full = data_files.image(small_manifest([GOOD]).parent / "images" / "big.png", size=(64, 64))
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])
    path = small_manifest([GOOD, {**GOOD, "id": "x", "image": "images/big.png"}])
    dataset = build(path)
    dataset[0]  # the good row loads
    with pytest.raises(ManifestError, match="cannot read image") as error:
        dataset[1]
    assert_names(error, 2, "image")


def test_non_audio_file_fails_when_read(small_manifest: Callable[[list], Path]) -> None:
    path = small_manifest([GOOD, {**GOOD, "id": "x", "audio": "images/a.png"}])
    dataset = build(path)
    with pytest.raises(ManifestError, match="cannot read audio") as error:
        dataset[1]
    assert_names(error, 2, "audio")


def test_text_without_tokens_fails_when_read(small_manifest: Callable[[list], Path]) -> None:
    # the default tokenizer maps unknown words to [UNK], so only a tokenizer that
    # drops characters can give no tokens; punctuation-only text still gives tokens
    path = small_manifest([{**GOOD, "text": "?!"}])
    assert build(path)[0]["text"].numel() >= 1


def test_unknown_modality_and_missing_tokenizer(small_manifest: Callable[[list], Path]) -> None:
    path = small_manifest([GOOD])
    with pytest.raises(ValueError, match="modalities"):
        ManifestDataset(path, ["video"])
    with pytest.raises(ValueError, match="tokenizer"):
        ManifestDataset(path, ["text"])


def test_non_utf8_line_and_bad_classes(small_manifest: Callable[[list], Path]) -> None:
    path = small_manifest([GOOD])
    path.write_bytes(path.read_bytes() + b'{"id": "\xff"}\n')
    with pytest.raises(ManifestError, match=r"train\.jsonl:2: not UTF-8") as error:
        build(path)
    assert (error.value.kind, error.value.line, error.value.field) == ("not UTF-8", 2, None)
    assert list(build(path, on_error="skip", max_bad_fraction=0.5).skipped) == ["not UTF-8"]
    with pytest.raises(ValueError, match="duplicate"):
        build(small_manifest([GOOD]), classes=["1", "1"])
