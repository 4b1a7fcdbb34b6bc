"""The tokenizer wrapper over ``tokenizers`` and (local) ``transformers`` tokenizers, and the
word-level tokenizer built from texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmctx.data.builtin.asset_pack import default_tokenizer_path
from mmctx.data.tokenization import TextTokenizer, load_tokenizer, train_word_tokenizer


def test_encode_decode() -> None:
    tok = load_tokenizer(default_tokenizer_path())
    ids = tok.encode("Two DOGS, and a zebra?")
    assert tok.decode(ids) == "two dogs , and a ?"  # [UNK] is special: skipped
    assert ids[-2] == tok.unk_id
    assert tok.decode(tok.encode("a cat , a bus and a rose")) == "a cat , a bus and a rose"
    for bad in ("", "   \n"):
        with pytest.raises(ValueError, match="empty"):
            tok.encode(bad)


def test_save_and_reload(tmp_path: Path) -> None:
    tok = load_tokenizer(default_tokenizer_path())
    path = tok.save(tmp_path / "tok")
    again = load_tokenizer(path.parent)  # a folder holding tokenizer.json
    assert again.encode("three mice") == tok.encode("three mice")
    assert again.vocab_size == tok.vocab_size


def test_transformers_tokenizer_from_local_folder(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(default_tokenizer_path()),
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(str(tmp_path / "hf"))
    tok = load_tokenizer(tmp_path / "hf")  # AutoTokenizer, local_files_only
    assert isinstance(tok, TextTokenizer) and not tok._is_hf_tokenizers
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 2, 3, 1)
    assert tok.vocab_size == load_tokenizer(default_tokenizer_path()).vocab_size
    assert tok.encode("two dogs") == load_tokenizer(default_tokenizer_path()).encode("two dogs")
    assert tok.decode(tok.encode("two dogs")) == "two dogs"
    assert load_tokenizer(tok.save(tmp_path / "hf2")).encode("a cat") == tok.encode("a cat")


def test_missing_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(tmp_path / "bad.json")


def test_built_tokenizer_is_deterministic_and_respects_min_frequency():
    texts = ["b a", "a c", "c b", "d"]
    a, b = train_word_tokenizer(texts), train_word_tokenizer(list(reversed(texts)))
    assert a.backend.get_vocab() == b.backend.get_vocab()
    assert a.encode("a b c d") == [4, 5, 6, 7]  # counts tie at 2 for a, b, c → alphabetical
    rare = train_word_tokenizer(texts, min_frequency=2)
    assert rare.encode("d") == [rare.unk_id]
