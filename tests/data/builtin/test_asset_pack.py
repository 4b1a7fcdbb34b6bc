"""The committed asset pack: its files, its fingerprint and its word-level tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from mmctx.data.builtin.asset_pack import AssetPack, default_asset_dir, default_tokenizer_path
from mmctx.data.tokenization import load_tokenizer


def test_default_tokenizer_special_ids_and_vocab() -> None:
    tok = load_tokenizer(default_tokenizer_path())
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id) == (0, 1, 2, 3, 4)
    pack = AssetPack()
    assert tok.vocab_size == 5 + len(pack.vocabulary) + 3  # specials, words, ", . ?"
    for word in pack.vocabulary:
        assert tok.encode(word) != [tok.unk_id], word


def test_every_default_text_is_known(default_root: Path) -> None:
    tok = load_tokenizer(default_tokenizer_path())
    for line in (default_root / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        for field in ("text", "caption"):
            assert tok.unk_id not in tok.encode(row[field]), row[field]


#: The pack's fingerprint, recorded in the stamp of every generated data set: when it changes,
#: every cached data set (``~/.cache/mmctx/default-v4`` ...) is regenerated. Change it only
#: together with the pack (and bump DATASET_VERSION if the generated data must change).
PACK_FINGERPRINT = "7b0ed1911009e1278dc78afe5dcf6dc8a3dd10e1984b21f032168888d0e1ff8c"


def test_pack_ships_in_the_package_and_is_complete() -> None:
    pack = AssetPack()
    assert pack.path == default_asset_dir() == Path(__file__).resolve().parents[3] / "mmctx/data/builtin/assets/default"
    assert default_tokenizer_path() == pack.path / "tokenizer.json" and default_tokenizer_path().is_file()
    assert len(pack.objects) == 32 and len(pack.categories) == 4
    for obj in pack.objects:
        assert pack.pictogram(obj.name).mode == "RGBA"
    for voice in pack.voices:
        for word in pack.vocabulary:
            assert (pack.path / "speech" / voice / f"{word}.flac").is_file(), (voice, word)


def test_fingerprint_is_unchanged() -> None:
    """Cached data sets stay valid: the files the generators read are those they were made from."""
    assert AssetPack().fingerprint() == PACK_FINGERPRINT
