"""COCO-style caption files: shapes of the samples and batches, multi-reference evaluation
samples, the data module, and errors that name the file and the entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmctx.data import CocoCaptionDataModule
from mmctx.data.coco import CocoCaptionDataset, read_coco_captions
from mmctx.data.manifest import ManifestError
from mmctx.data.tokenization import train_word_tokenizer

CAPTIONS = {
    "a.png": ["A red square.", "a square that is red"],
    "b.png": ["A blue square on white"],
    "c.png": ["a green square", "green", "the green one"],
}


def write_coco(root: Path, data: dict | None = None, name: str = "captions.json", images: bool = True) -> Path:
    """A COCO caption file over small PNGs in ``root/images`` (ids 1, 2, 3)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    if images:
        for i, (file_name, color) in enumerate(zip(CAPTIONS, [(255, 0, 0), (0, 0, 255), (0, 255, 0)])):
            (root / "images").mkdir(exist_ok=True)
            Image.new("RGB", (20 + 4 * i, 12), color).save(root / "images" / file_name)
    if data is None:
        data = {
            "info": {"description": "test"},
            "images": [{"id": i + 1, "file_name": f, "width": 20, "height": 12} for i, f in enumerate(CAPTIONS)],
            "annotations": [
                {"id": 100 + k, "image_id": i + 1, "caption": c}
                for k, (i, c) in enumerate((i, c) for i, caps in enumerate(CAPTIONS.values()) for c in caps)
            ],
        }
    path = root / name
    path.write_text(json.dumps(data))
    return path


def tokenizer():
    return train_word_tokenizer([c for caps in CAPTIONS.values() for c in caps])


def test_read_groups_captions_by_image(tmp_path):
    path = write_coco(tmp_path)
    images = read_coco_captions(path, image_dir=tmp_path / "images")
    assert [im.file_name for im in images] == ["a.png", "b.png", "c.png"]
    assert [len(im.captions) for im in images] == [2, 1, 3]
    assert images[2].captions[1] == "green" and images[2].caption_entries == (3, 4, 5)
    assert images[0].path == tmp_path / "images" / "a.png"


def test_training_samples_one_per_caption_evaluation_samples_one_per_image(tmp_path):
    path = write_coco(tmp_path)
    tok = tokenizer()
    train = CocoCaptionDataset(path, tok, image_dir=tmp_path / "images", per_caption=True, image_size=16)
    assert len(train) == 6
    item = train[1]
    assert item["id"] == "a.png#1" and item["source"] == "captions.json:annotations[1]"
    assert item["image"].shape == (3, 16, 16)
    assert item["caption"][0] == tok.bos_id and item["caption"][-1] == tok.eos_id
    assert tok.decode(item["caption"]) == "a square that is red"

    evaluation = CocoCaptionDataset(path, tok, image_dir=tmp_path / "images", per_caption=False, image_size=16)
    assert len(evaluation) == 3
    item = evaluation[2]
    assert item["id"] == "c.png" and item["references"] == CAPTIONS["c.png"]
    assert item["caption_text"] == "a green square"  # the first caption, for the validation loss


def test_datamodule_batches_and_sizes(tmp_path):
    path = write_coco(tmp_path)
    dm = CocoCaptionDataModule(train_file=str(path), val_file=str(path), image_dir=str(tmp_path / "images"),
                               min_word_frequency=1, batch_size=4, num_workers=0, image_size=16, max_text_len=6)
    # specials first, then words by frequency, ties alphabetical: "a" and "square" (4× each)
    assert (dm.pad_id, dm.bos_id, dm.eos_id) == (0, 2, 3)
    assert dm.tokenizer.encode("A square.") == [4, 5, dm.tokenizer.encode(".")[0]]
    words = {w for caps in CAPTIONS.values() for c in caps for w in c.lower().replace(".", " ").split()}
    assert dm.vocab_size == 4 + len(words) + 1  # + "."
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.inputs["image"].data.shape == (4, 3, 16, 16) and batch.inputs["image"].mask.all()
    T = batch.targets["caption"].shape[1]
    assert T <= 6 and batch.targets["caption_mask"].shape == (4, T)
    assert len(batch.meta["caption_text"]) == 4 and len(batch.meta["references"]) == 4
    val = next(iter(dm.val_dataloader()))
    assert val.ids == ["a.png", "b.png", "c.png"]
    assert val.meta["references"] == list(CAPTIONS.values())


def test_prediction_keeps_images_without_captions(tmp_path):
    data = json.loads(write_coco(tmp_path).read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]
    path = write_coco(tmp_path, data, images=False)
    tok = tokenizer()
    evaluation = CocoCaptionDataset(path, tok, image_dir=tmp_path / "images", per_caption=False)
    assert [it["id"] for it in (evaluation[i] for i in range(len(evaluation)))] == ["a.png", "c.png"]
    predict = CocoCaptionDataset(path, tok, image_dir=tmp_path / "images", per_caption=False, require_captions=False)
    assert len(predict) == 3 and "references" not in predict[1] and "caption" not in predict[0]


def _good(tmp_path: Path) -> dict:
    return json.loads(write_coco(tmp_path).read_text())


@pytest.mark.parametrize(
    "edit, where, reason",
    [
        (lambda d: d["images"][1].update(file_name="missing.png"), r"images\[1\] \(id 2\)", "image file not found: .*missing.png"),
        (lambda d: d["annotations"].append({"image_id": 42, "caption": "x"}), r"annotations\[6\] \(image_id 42\)",
         "caption for unknown image_id 42"),
        (lambda d: d["annotations"][2].update(caption="   "), r"annotations\[2\] \(image_id 2\)", "empty caption"),
        (lambda d: d["annotations"][0].pop("caption"), r"annotations\[0\] \(image_id 1\)", "missing 'caption'"),
        (lambda d: d["annotations"][0].update(caption=7), r"annotations\[0\] \(image_id 1\)", "caption must be a string"),
        (lambda d: d["images"].append({"id": 1, "file_name": "a.png"}), r"images\[3\] \(id 1\)", "duplicate image id 1"),
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\] \(id 1\)", "'file_name' must be a non-empty string"),
        (lambda d: d.pop("annotations"), "annotations", "missing or not a list"),
    ],
    ids=["missing image", "unknown image_id", "empty caption", "no caption", "caption not text", "duplicate id",
         "no file_name", "no annotations"],
)
def test_errors_name_the_file_and_the_entry(tmp_path, edit, where, reason):
    data = _good(tmp_path)
    edit(data)
    path = write_coco(tmp_path, data, name="bad.json", images=False)
    with pytest.raises(ManifestError, match=rf"bad\.json: {where}: {reason}"):
        read_coco_captions(path, image_dir=tmp_path / "images")


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(ManifestError, match=r"bad\.json: malformed JSON"):
        read_coco_captions(bad)
    with pytest.raises(ManifestError, match=r"nope\.json: caption file not found"):
        read_coco_captions(tmp_path / "nope.json")


def test_unreadable_image_names_the_entry(tmp_path):
    path = write_coco(tmp_path)
    (tmp_path / "images" / "b.png").write_bytes(b"not a png")
    ds = CocoCaptionDataset(path, tokenizer(), image_dir=tmp_path / "images", per_caption=False)
    with pytest.raises(ManifestError, match=r"captions\.json: images\[1\] \(id 2\): cannot read image"):
        ds[1]
    assert torch.is_tensor(ds[0]["image"])


def test_captioning_task_evaluates_against_every_reference(tmp_path):
    """Training runs on each caption; the test split scores one caption per image against all
    of that image's references, which land in captions_test.jsonl."""
    import lightning as L

    from mmctx.encoders import TimmImageEncoder
    from mmctx.fusion import ConcatFusion
    from mmctx.heads import TextDecoder
    from mmctx.models import EncoderDecoderModel
    from mmctx.trainers import CaptioningTask

    path = write_coco(tmp_path)
    dm = CocoCaptionDataModule(train_file=str(path), test_file=str(path), image_dir=str(tmp_path / "images"),
                               min_word_frequency=1, batch_size=2, num_workers=0, image_size=32, max_text_len=8)
    torch.manual_seed(0)
    model = EncoderDecoderModel(
        {"image": TimmImageEncoder("resnet10t", out_dim=16, stage=1)}, ConcatFusion({"image": 16}, 16),
        TextDecoder(dm.vocab_size, 16, num_layers=1, num_heads=2, max_seq_len=8,
                    pad_id=dm.pad_id, bos_id=dm.bos_id, eos_id=dm.eos_id),
    )
    task = CaptioningTask(model, max_new_tokens=4)
    trainer = L.Trainer(max_epochs=1, logger=L.pytorch.loggers.CSVLogger(tmp_path, name="run", version=0),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(task, datamodule=dm)
    assert trainer.global_step == 3  # 6 captions, batches of 2
    metrics = trainer.test(task, datamodule=dm, verbose=False)[0]
    assert 0.0 <= metrics["test/cider"] <= 10.0 and metrics["test/ref_distinct"] == 1.0
    rows = [json.loads(line) for line in (tmp_path / "run" / "version_0" / "captions_test.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == list(CAPTIONS) and [r["references"] for r in rows] == list(CAPTIONS.values())


def test_predict_captions_a_folder_of_images(tmp_path):
    import lightning as L

    from mmctx.encoders import TimmImageEncoder
    from mmctx.fusion import ConcatFusion
    from mmctx.heads import TextDecoder
    from mmctx.models import EncoderDecoderModel
    from mmctx.trainers import CaptioningTask, JsonlPredictionWriter

    write_coco(tmp_path)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    tok_path = tokenizer().save(tmp_path / "tok")
    dm = CocoCaptionDataModule(predict_path=str(tmp_path / "images"), tokenizer=str(tok_path), batch_size=2,
                               num_workers=0, image_size=32)
    torch.manual_seed(0)
    model = EncoderDecoderModel(
        {"image": TimmImageEncoder("resnet10t", out_dim=16, stage=1)}, ConcatFusion({"image": 16}, 16),
        TextDecoder(dm.vocab_size, 16, num_layers=1, num_heads=2, max_seq_len=8,
                    pad_id=dm.pad_id, bos_id=dm.bos_id, eos_id=dm.eos_id),
    )
    out = tmp_path / "captions.jsonl"
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[JsonlPredictionWriter(str(out))], default_root_dir=tmp_path)
    trainer.predict(CaptioningTask(model, max_new_tokens=4), datamodule=dm, return_predictions=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input"] for r in rows] == ["a.png", "b.png", "c.png"]
    assert all(set(r) == {"input", "caption"} and isinstance(r["caption"], str) for r in rows)
    with pytest.raises(ValueError, match="a folder of images, without captions"):
        CocoCaptionDataset(tmp_path / "images", tokenizer(), per_caption=True)
    with pytest.raises(ManifestError, match="no image files"):
        CocoCaptionDataset(tmp_path / "tok", tokenizer(), per_caption=False, require_captions=False)
