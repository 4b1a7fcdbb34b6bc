"""The long-range retrieval data: determinism, the key fact, images, caching, data module."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmctx.data import LongRangeDataModule
from mmctx.data.builtin.asset_pack import AssetPack
from mmctx.data.builtin.long_range import (
    DISTRACTOR_COLOURS,
    KEY_WORD,
    LONG_RANGE_CATEGORIES,
    LONG_RANGE_CLASSES,
    LONG_RANGE_COLOURS,
    LONG_RANGE_OBJECTS,
    answer_text,
    ensure_long_range_dataset,
    fact_beyond_fraction,
    generate_long_range_dataset,
    long_range_tokenizer,
    make_sample,
    render_object,
    truncation_cap,
)

TINY = {"num_train": 12, "num_val": 4, "num_test": 6, "min_tokens": 600, "max_tokens": 900, "image_size": 32, "seed": 3,
        "train_min_tokens": 128}
FACT = re.compile(r"\bthe (\w+) is (\w+) \.")


def read_rows(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_long_range_dataset(tmp_path_factory.mktemp("long_range") / "data", **TINY)


def test_same_seed_same_files_other_seed_other_texts(tiny_root: Path, tmp_path: Path) -> None:
    again = generate_long_range_dataset(tmp_path / "again", **TINY)
    for split in ("train", "val", "test"):
        assert (again / f"{split}.jsonl").read_bytes() == (tiny_root / f"{split}.jsonl").read_bytes()
    for row in read_rows(tiny_root, "train"):
        assert (again / row["image"]).read_bytes() == (tiny_root / row["image"]).read_bytes()
    other = generate_long_range_dataset(tmp_path / "other", **{**TINY, "seed": 4})
    assert [r["text"] for r in read_rows(other, "train")] != [r["text"] for r in read_rows(tiny_root, "train")]
    assert make_sample("s", 100, 200) == make_sample("s", 100, 200)


def test_key_sentence_is_stated_exactly_once_and_the_label_combines_image_and_key(tiny_root: Path) -> None:
    pack = AssetPack()
    for split in ("train", "val", "test"):
        for row in read_rows(tiny_root, split):
            words = row["text"].split()
            assert len(words) == row["num_tokens"]
            low = TINY["train_min_tokens"] if split == "train" else TINY["min_tokens"]
            assert low <= row["num_tokens"] <= TINY["max_tokens"]
            # exactly one key sentence, at fact_token; its marker and its colours nowhere else
            assert words.count(KEY_WORD) == 1
            assert words[row["fact_token"] - 3 : row["fact_token"] + 2] == ["the", KEY_WORD, "is", row["colour"], "."]
            assert [w for w in words if w in LONG_RANGE_COLOURS] == [row["colour"]]
            # the label is the pictured object's category and the key colour, nothing else
            assert row["object"] in LONG_RANGE_OBJECTS
            assert row["category"] == pack.by_name[row["object"]].category
            assert row["label"] == f"{row['category']}-{row['colour']}" and row["label"] in LONG_RANGE_CLASSES
            # distractor colour facts everywhere, each object with one (distractor) colour
            facts = [(o, c) for o, c in FACT.findall(row["text"]) if o != KEY_WORD and c != "near"]
            assert len(facts) >= row["num_tokens"] // 60 and all(c in DISTRACTOR_COLOURS for _, c in facts)
            colours: dict[str, set[str]] = {}
            for obj, colour in facts:
                colours.setdefault(obj, set()).add(colour)
            assert all(len(c) == 1 for c in colours.values())


def test_classes_are_category_times_colour() -> None:
    assert len(LONG_RANGE_CLASSES) == 16 == len(set(LONG_RANGE_CLASSES))
    for i, name in enumerate(LONG_RANGE_CLASSES):
        assert name == f"{LONG_RANGE_CATEGORIES[i // 4]}-{LONG_RANGE_COLOURS[i % 4]}"
    sample = make_sample("label", 100, 200)
    assert LONG_RANGE_CLASSES[sample.label] == f"{sample.category}-{sample.colour}"


def test_image_shows_the_pictured_object(tiny_root: Path) -> None:
    """The stored picture is the pictured object's pictogram rendered from the sample's seed, and
    differs from every other object's rendering with the same seed."""
    pack = AssetPack()
    for i, row in enumerate(read_rows(tiny_root, "train")[:4]):
        rng_seed = f"mmctx-long-range:{TINY['seed']}:train:{i}:image"
        stored = (tiny_root / row["image"]).read_bytes()
        renders = {}
        for name in LONG_RANGE_OBJECTS:
            buffer = io.BytesIO()
            render_object(pack.pictogram(name), TINY["image_size"], random.Random(rng_seed)).save(buffer, format="PNG")
            renders[name] = buffer.getvalue()
        assert [n for n, data in renders.items() if data == stored] == [row["object"]]
        assert Image.open(tiny_root / row["image"]).size == (32, 32)


def test_key_lies_beyond_token_512_in_three_quarters_of_long_documents() -> None:
    samples = [make_sample(f"beyond:{i}", 1536, 3072) for i in range(400)]
    fraction = fact_beyond_fraction([{"fact_token": s.fact_token} for s in samples], 512)
    # positions uniform over the text: E[1 - 512 / L] = 1 - 512 ln 2 / 1536 = 0.769 for L ~ U(1536, 3072)
    assert 0.72 < fraction < 0.82
    assert fact_beyond_fraction([{"fact_token": 511}, {"fact_token": 512}], 512) == 0.5
    assert truncation_cap(0.76) == pytest.approx(0.24 + 0.76 / 4)
    assert truncation_cap(0.0) == 1.0 and truncation_cap(1.0) == 0.25
    with pytest.raises(ValueError, match="beyond"):
        truncation_cap(1.5)


def test_labels_objects_and_key_positions_are_spread() -> None:
    samples = [make_sample(f"spread:{i}", 64, 160) for i in range(400)]
    assert {s.label for s in samples} == set(range(len(LONG_RANGE_CLASSES)))
    assert {s.object for s in samples} == set(LONG_RANGE_OBJECTS)
    # the key sentence's position is spread over the document, not always near one end
    relative = [s.fact_token / s.num_tokens for s in samples]
    assert min(relative) < 0.1 and max(relative) > 0.9


def test_training_length_mixture_is_log_uniform() -> None:
    lengths = sorted(make_sample(f"mix:{i}", 128, 3072, log_uniform=True).num_tokens for i in range(400))
    assert 128 <= lengths[0] and lengths[-1] <= 3072
    # log-uniform over [128, 3072]: median sqrt(128 * 3072) = 627, a quarter below 128 * 24**0.25 = 283
    assert 500 < lengths[200] < 760
    assert 0.17 < sum(n < 283 for n in lengths) / 400 < 0.33
    with pytest.raises(ValueError, match="train_min_tokens"):
        generate_long_range_dataset("/nonexistent", **{**TINY, "train_min_tokens": 700})


def test_tokenizer_covers_every_word(tiny_root: Path) -> None:
    tok = long_range_tokenizer()
    row = read_rows(tiny_root, "train")[0]
    ids = tok.encode(row["text"])
    assert len(ids) == row["num_tokens"] and tok.unk_id not in ids
    assert tok.decode(ids) == row["text"]
    assert json.loads((tiny_root / "classes.json").read_text()) == LONG_RANGE_CLASSES
    assert (tiny_root / "tokenizer.json").is_file()


def test_ensure_keeps_an_up_to_date_folder_and_regenerates_a_stale_one(tmp_path: Path) -> None:
    small = {**TINY, "num_train": 3, "num_val": 1, "num_test": 1}
    root = ensure_long_range_dataset(tmp_path / "d", **small)
    stamp = (root / "manifest_info.json").stat().st_mtime_ns
    ensure_long_range_dataset(root, **small)
    assert (root / "manifest_info.json").stat().st_mtime_ns == stamp
    ensure_long_range_dataset(root, **{**small, "num_train": 4})
    assert len(read_rows(root, "train")) == 4
    ensure_long_range_dataset(root, **{**small, "num_train": 4, "train_min_tokens": 0})  # training lengths changed
    assert all(r["num_tokens"] >= small["min_tokens"] for r in read_rows(root, "train"))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="refusing to replace"):
        ensure_long_range_dataset(tmp_path / "foreign", **small)


def test_data_module_sizes_are_known_before_any_data(tmp_path: Path) -> None:
    dm = LongRangeDataModule(root=str(tmp_path / "none"))
    assert dm.num_classes == 16 and dm.classes == LONG_RANGE_CLASSES
    assert dm.vocab_size == long_range_tokenizer().vocab_size and dm.pad_id == 0
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValueError, match="modalities"):
        LongRangeDataModule(root=str(tmp_path / "none"), modalities=["audio"])


def assert_label_and_key_targets(batch, rows: list[dict], tok) -> None:
    """The class label, and the key colour word's token span and colour (CaptioningTask's
    label_loss_weight / key_loss_weight), batched from the manifest rows."""
    assert batch.targets["label"].tolist() == [LONG_RANGE_CLASSES.index(r["label"]) for r in rows]
    # the key colour word's token span and colour (CaptioningTask's key_loss_weight)
    assert batch.targets["key_span"].tolist() == [[r["fact_token"], r["fact_token"] + 1] for r in rows]
    assert batch.targets["key_label"].tolist() == [LONG_RANGE_COLOURS.index(r["colour"]) for r in rows]
    for b, row in enumerate(rows):  # (a span cut away by max_text_len lies past the document's end)
        if row["fact_token"] < batch.inputs["text"].mask[b].sum():
            assert tok.decode([int(batch.inputs["text"].data[b, row["fact_token"]])]) == row["colour"]


@pytest.mark.parametrize("max_text_len", [4096, 512])
def test_data_module_batches_shapes_masks_and_truncation(tiny_root: Path, max_text_len: int) -> None:
    dm = LongRangeDataModule(root=str(tiny_root), **{k: v for k, v in TINY.items() if k != "seed"},
                             data_seed=TINY["seed"], batch_size=5, max_text_len=max_text_len)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    rows = read_rows(tiny_root, "val")
    text, image = batch.inputs["text"], batch.inputs["image"]
    lengths = [min(r["num_tokens"], max_text_len) for r in rows]
    assert text.data.shape == (4, max(lengths)) and text.mask.dtype == torch.bool
    assert text.mask.sum(dim=1).tolist() == lengths
    assert bool((text.data[~text.mask] == dm.pad_id).all())
    tok = long_range_tokenizer()
    for b, row in enumerate(rows):
        assert text.data[b, : lengths[b]].tolist() == tok.encode(row["text"])[:max_text_len]
    assert image.data.shape == (4, 3, 32, 32) and image.mask.all()
    assert_label_and_key_targets(batch, rows, tok)
    assert batch.ids == [r["id"] for r in rows]


def test_answer_is_the_key_colour_then_the_category_and_needs_the_key_sentence(tiny_root: Path) -> None:
    for split in ("train", "val", "test"):
        for row in read_rows(tiny_root, split):
            colour, category = row["answer"].split()
            assert (colour, category) == (row["colour"], row["category"]) and row["label"] == f"{category}-{colour}"
            words = row["text"].split()
            # the answer's colour is in the document once, in the key sentence; the category never
            assert [i for i, w in enumerate(words) if w == colour] == [row["fact_token"]]
            assert words[row["fact_token"] - 3 : row["fact_token"] + 2] == ["the", KEY_WORD, "is", colour, "."]
            assert category not in words
    sample = make_sample("answer", 100, 200)
    assert sample.answer == f"{sample.colour} {sample.category}"
    assert answer_text("blue", "animals") == "blue animals"
    with pytest.raises(ValueError, match="colour"):
        answer_text("pink", "animals")  # a distractor colour is never an answer


def test_data_module_answer_target_is_the_caption_in_the_answer_vocabulary(tiny_root: Path) -> None:
    common = {k: v for k, v in TINY.items() if k != "seed"}
    dm = LongRangeDataModule(root=str(tiny_root), **common, data_seed=TINY["seed"], batch_size=4, output="answer")
    plain = long_range_tokenizer()
    tok = long_range_tokenizer(answers=True)
    assert dm.vocab_size == tok.vocab_size == plain.vocab_size + len(LONG_RANGE_CATEGORIES)
    assert dm.classes == list(LONG_RANGE_CLASSES)  # the labels come too (CaptioningTask's label_loss_weight)
    assert all(tok.encode(c) != [tok.unk_id] and plain.encode(c) == [plain.unk_id] for c in LONG_RANGE_CATEGORIES)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    rows = read_rows(tiny_root, "val")
    assert batch.meta["caption_text"] == [r["answer"] for r in rows]
    assert_label_and_key_targets(batch, rows, tok)
    ids, mask = batch.targets["caption"], batch.targets["caption_mask"]
    assert ids.shape == (4, 4) and bool(mask.all())  # [bos] colour category [eos]
    for b, row in enumerate(rows):
        assert ids[b].tolist() == [dm.bos_id, *tok.encode(row["answer"]), dm.eos_id]
        assert batch.inputs["text"].data[b, : row["num_tokens"]].tolist() == tok.encode(row["text"])
    # the classification data module keeps the documents' own vocabulary (its models are unchanged)
    assert LongRangeDataModule(root=str(tiny_root), **common).vocab_size == plain.vocab_size
    with pytest.raises(ValueError, match="output"):
        LongRangeDataModule(root=str(tiny_root), output="caption")
