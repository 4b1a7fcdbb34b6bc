"""mmctx.load / mmctx.export and `mmctx classify`: the same outputs as the CLI's predict for
the same files, from a checkpoint and from an exported folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmctx.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def classifier(default_root, tmp_path_factory) -> tuple[Path, list[dict], list[dict]]:
    """configs/default.yaml (image + question) trained a few steps; its predict rows and the
    test manifest's rows."""
    tmp = tmp_path_factory.mktemp("classify")
    main(["fit", f"--config={REPO / 'configs/default.yaml'}", f"--data.root={default_root}", "--data.num_train=40",
          "--data.num_val=10", "--data.num_test=10", "--data.data_seed=0", "--data.num_workers=0",
          "--data.batch_size=8", "--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
          f"--trainer.logger.init_args.save_dir={tmp / 'runs'}", "--model.init_args.scheduler.init_args.warmup_steps=0"])
    ckpt = tmp / "runs" / "default" / "version_0" / "checkpoints" / "last.ckpt"
    main(["predict", f"--config={REPO / 'configs/default.yaml'}", f"--ckpt_path={ckpt}",
          "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={tmp / 'runs'}"])
    predicted = [json.loads(line) for line in (ckpt.parent.parent / "predictions.jsonl").read_text().splitlines()]
    manifest = [json.loads(line) for line in (default_root / "test.jsonl").read_text().splitlines()]
    return ckpt, predicted, manifest


def test_load_classifies_as_the_cli_predicts(classifier, default_root):
    import mmctx

    ckpt, predicted, manifest = classifier
    predictor = mmctx.load(ckpt)
    assert predictor.task == "classification" and predictor.modalities == ["image", "text"]
    images = [str(default_root / row["image"]) for row in manifest]
    texts = [row["text"] for row in manifest]
    rows = predictor.classify(images=images, texts=texts, batch_size=8, top_k=32)
    assert [r["predicted"] for r in rows] == [p["predicted"] for p in predicted]
    for ours, theirs in zip(rows, predicted):
        assert dict(ours["top"]) == pytest.approx(theirs["probs"], abs=2e-4)
    with pytest.raises(TypeError, match=r"offers \.classify\(\)"):
        predictor.caption(images=images)
    # PIL images and arrays give the same batch as the files
    import numpy as np
    from PIL import Image

    pil = [Image.open(p) for p in images[:3]]
    assert predictor.classify(images=pil, texts=texts[:3]) == predictor.classify(images=images[:3], texts=texts[:3])
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in images[:3]]
    assert predictor.classify(images=arrays, texts=texts[:3]) == predictor.classify(images=images[:3], texts=texts[:3])


def test_exported_folder_loads_without_pickle_and_gives_identical_outputs(classifier, default_root, tmp_path):
    import mmctx

    ckpt, _, manifest = classifier
    folder = mmctx.export(ckpt, tmp_path / "export")
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json", "preprocessing.json", "tokenizer.json"}
    images = [str(default_root / row["image"]) for row in manifest]
    texts = [row["text"] for row in manifest]
    original = mmctx.load(ckpt).logits(images=images, texts=texts)
    exported = mmctx.load(folder).logits(images=images, texts=texts)
    assert torch.equal(original, exported)
    # nothing in the folder is a pickle
    assert not any(p.suffix in {".ckpt", ".pt", ".pkl", ".bin"} for p in folder.iterdir())


def test_classify_command_prints_a_table_and_writes_jsonl(classifier, default_root, tmp_path, capsys):
    ckpt, predicted, manifest = classifier
    images = [str(default_root / row["image"]) for row in manifest[:4]]
    main(["classify", str(ckpt), *images, "--text", manifest[0]["text"]])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["file", "predicted", "score"] and len(out) == 5
    main(["classify", str(ckpt), *images, "--text", manifest[0]["text"], "--output", str(tmp_path / "out.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["file"] for r in rows] == images
    if all(row["text"] == manifest[0]["text"] for row in manifest[:4]):
        assert [r["predicted"] for r in rows] == [p["predicted"] for p in predicted[:4]]


def test_import_mmctx_stays_light():
    out = subprocess.run([sys.executable, "-c", "import sys, mmctx; print('lightning' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"]
    out = subprocess.run([sys.executable, "-c", "import sys, mmctx; mmctx.load; print('lightning' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"]
