"""A tokenizer that fits the data: chosen or trained on the training split per data module, saved
and reloaded bit-identically, and the unknown-token guard on the training texts."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from mmctx.data import CocoCaptionDataModule, DefaultDataModule, MultimodalDataModule
from mmctx.data.tokenization import TokenizerTraining, resolve_tokenizer

#: Real-looking English text (news-group style): mostly outside the demo's 92 words.
ENGLISH = [
    "The committee approved the new budget after a long debate on Tuesday evening.",
    "Scientists reported that the vaccine reduced hospital admissions by forty percent.",
    "My laptop keeps overheating whenever I compile large projects; any advice?",
    "The orchestra performed Beethoven's ninth symphony to a sold-out audience.",
    "Heavy rain flooded several streets downtown and delayed the morning trains.",
    "She argued that the proposed regulation would hurt small independent farmers.",
]


def _manifest(root: Path, data_files, texts: list[str], name: str = "train.jsonl") -> Path:
    data_files.image(root / "images" / "a.png")
    rows = [{"id": f"r{i}", "image": "images/a.png", "text": t, "label": "ab"[i % 2], "caption": t}
            for i, t in enumerate(texts)]
    return data_files.manifest(root / name, rows)


def test_manifest_text_needs_a_tokenizer_choice(tmp_path: Path, data_files) -> None:
    path = _manifest(tmp_path, data_files, ENGLISH)
    with pytest.raises(ValueError, match="no tokenizer is chosen") as info:
        MultimodalDataModule(train_manifest=str(path), modalities=["image", "text"], num_workers=0)
    assert "train_tokenizer: {kind: word}" in str(info.value) and "tokenizer: builtin" in str(info.value)
    # no text, no tokenizer: nothing to choose
    dm = MultimodalDataModule(train_manifest=str(path), modalities=["image"], num_workers=0)
    assert dm.tokenizer is None and dm.vocab_size is None and dm.inference_state()["tokenizer_json"] is None
    with pytest.raises(ValueError, match="not both"):
        MultimodalDataModule(train_manifest=str(path), modalities=["text"], tokenizer="builtin",
                             train_tokenizer=TokenizerTraining())


@pytest.mark.parametrize("training", [{"kind": "word"}, {"kind": "bpe", "vocab_size": 300}], ids=["word", "bpe"])
def test_trained_tokenizer_saved_and_reloaded_gives_identical_ids(tmp_path: Path, data_files, training) -> None:
    path = _manifest(tmp_path, data_files, ENGLISH)
    dm = MultimodalDataModule(train_manifest=str(path), modalities=["image", "text"], caption_field="caption",
                              train_tokenizer=training, num_workers=0)
    assert dm.tokenizer_trained and dm.vocab_size == dm.tokenizer.vocab_size
    assert (dm.pad_id, dm.bos_id, dm.eos_id) == (0, 2, 3)
    if training["kind"] == "word":
        assert dm.vocab_size == 4 + len({w for t in ENGLISH for w in resolve_words(t)})
    # fitting saves it in the run folder
    dm.trainer = SimpleNamespace(log_dir=str(tmp_path / "run"), is_global_zero=True)
    dm.setup("fit")
    assert dm.unk_rate == 0.0
    saved = tmp_path / "run" / "tokenizer" / "tokenizer.json"
    assert saved.is_file()
    probe = ENGLISH + ["An unseen sentence about quantum zebras!"]
    ids = [dm.tokenizer.encode(t) for t in probe]
    for reloaded in (
        MultimodalDataModule(train_manifest=str(path), modalities=["text"], tokenizer=str(saved)).tokenizer,
        resolve_tokenizer(dm.inference_state()["tokenizer_json"]),  # a JSON string, as checkpoints keep it
        # retrained from the same file in a new data module (e.g. the CLI's second build)
        MultimodalDataModule(train_manifest=str(path), modalities=["text"], train_tokenizer=training).tokenizer,
    ):
        assert [reloaded.encode(t) for t in probe] == ids
        assert reloaded.to_json() == dm.tokenizer.to_json()
    assert dm.hparams["train_tokenizer"] == training  # plain data in the checkpoint


def resolve_words(text: str) -> list[str]:
    from tokenizers import normalizers, pre_tokenizers

    pre = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(behavior="isolated")])
    return [w for w, _ in pre.pre_tokenize_str(normalizers.Lowercase().normalize_str(text))]


def test_unk_guard_fires_on_the_demo_vocabulary(tmp_path: Path, data_files, caplog) -> None:
    path = _manifest(tmp_path, data_files, ENGLISH)
    dm = MultimodalDataModule(train_manifest=str(path), modalities=["image", "text"], tokenizer="builtin", num_workers=0)
    with pytest.raises(ValueError, match=r"train\.jsonl: \d+\.\d% of the \d+ training text tokens are unknown") as info:
        dm.setup("fit")
    message = str(info.value)
    rate = float(message.split(": ")[1].split("%")[0])
    assert rate > 50 and "train_tokenizer: {kind: word}" in message and "unk_policy: warn" in message
    # the classes lookup (what the CLI reads first) builds the train split: it fails there already
    with pytest.raises(ValueError, match="unknown to the tokenizer"):
        MultimodalDataModule(train_manifest=str(path), modalities=["text"], tokenizer="builtin").num_classes
    dm = MultimodalDataModule(train_manifest=str(path), modalities=["image", "text"], tokenizer="builtin",
                              unk_policy="warn", num_workers=0)
    with caplog.at_level(logging.WARNING, logger="mmctx.data.datamodules"):
        dm.setup("fit")
    assert dm.unk_rate * 100 == pytest.approx(rate, abs=0.1) and "unknown to the tokenizer" in caplog.text
    dm = MultimodalDataModule(train_manifest=str(path), modalities=["text"], tokenizer="builtin", max_unk_rate=1.0)
    dm.setup("fit")  # a threshold of its own


def test_builtin_data_keeps_its_vocabulary(default_root: Path, small_data: dict[str, int]) -> None:
    dm = DefaultDataModule(root=str(default_root), **small_data, modalities=["text"], num_workers=0)
    assert dm.tokenizer.vocab_size == 92 and not dm.tokenizer_trained
    dm.setup("fit")
    builtin = MultimodalDataModule(train_manifest=str(default_root / "train.jsonl"), modalities=["text"],
                                   tokenizer="builtin", classes=dm.classes)
    builtin.setup("fit")
    assert builtin.unk_rate == 0.0  # the demo's data in the demo's vocabulary


def test_coco_tokenizer_choice(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(root / "images" / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.png"}],
            "annotations": [{"image_id": 1, "caption": t} for t in ENGLISH]}
    path = root / "train.json"
    path.write_text(json.dumps(data))
    kwargs = dict(train_file=str(path), image_dir=str(root / "images"), num_workers=0, image_size=16)
    # the default word-level tokenizer keeps words seen 5 times: nearly every word is [UNK] here
    with pytest.raises(ValueError, match="unknown to the tokenizer"):
        CocoCaptionDataModule(**kwargs).setup("fit")
    dm = CocoCaptionDataModule(**kwargs, train_tokenizer=TokenizerTraining("bpe", vocab_size=300))
    dm.trainer = SimpleNamespace(log_dir=str(tmp_path / "run"), is_global_zero=True)
    dm.setup("fit")
    assert dm.unk_rate == 0.0 and dm.tokenizer_trained
    saved = tmp_path / "run" / "tokenizer" / "tokenizer.json"
    again = CocoCaptionDataModule(**kwargs, tokenizer=str(saved))
    assert not again.tokenizer_trained
    assert [again.tokenizer.encode(t) for t in ENGLISH] == [dm.tokenizer.encode(t) for t in ENGLISH]


def test_hub_id_that_cannot_load_says_how(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        resolve_tokenizer("not a valid/hub id!")  # refused before any network access
    with pytest.raises(FileNotFoundError, match="tokenizer not found"):
        resolve_tokenizer(str(tmp_path / "missing.json"))


def test_yaml_fills_train_tokenizer() -> None:
    """LightningCLI's parser builds the typed train_tokenizer from plain YAML data."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(MultimodalDataModule, "data")
    cfg = parser.parse_object({"data": {"train_tokenizer": {"kind": "bpe", "vocab_size": 500}, "unk_policy": "warn"}})
    assert cfg.data.train_tokenizer.kind == "bpe" and cfg.data.train_tokenizer.vocab_size == 500
