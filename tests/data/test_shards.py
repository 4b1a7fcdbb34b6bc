"""Sharded streaming data: the converter, the shard data set (equal to the manifest path's
samples), the shard-by-shard order under DDP and resume, and the streaming data module."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from mmctx.data.builtin.asset_pack import default_tokenizer_path
from mmctx.data.collate import collate_multimodal
from mmctx.data.manifest import ManifestDataset, ManifestError
from mmctx.data.media import MediaError, read_audio, read_image
from mmctx.data.shards import ShardBatchSampler, ShardDataset, write_shards
from mmctx.data.tokenization import resolve_tokenizer

pytest.importorskip("litdata")


@pytest.fixture(scope="module")
def tokenizer():
    return resolve_tokenizer(str(default_tokenizer_path()))


def rows_with_media(data_files, root: Path, count: int) -> list[dict]:
    """``count`` rows with distinct images (sizes, colours), audio (lengths, rates, channels),
    texts, labels and captions; some rows lack a modality."""
    rows = []
    for i in range(count):
        row: dict = {"id": f"r{i}", "label": ["dog", "cat", "bus"][i % 3], "caption": f"a dog and a cat {i % 2}"}
        if i % 4 != 3:
            data_files.image(root / "images" / f"{i}.png", size=(16 + i, 12 + 2 * i), color=(10 * i, 200, 255 - 7 * i))
            row["image"] = f"images/{i}.png"
        if i % 5 != 4:
            data_files.audio(root / "audio" / f"{i}.wav", samples=400 + 37 * i, rate=[16000, 8000][i % 2],
                             channels=1 + i % 2, value=0.01 * (i + 1))
            row["audio"] = f"audio/{i}.wav"
        row["text"] = ["what animals", "what food", "what vehicles"][i % 3]
        rows.append(row)
    return rows


@pytest.fixture
def converted(tmp_path, data_files, tokenizer):
    """A 13-row manifest and its shards in uneven chunks (chunk_size 5: 5, 5, 3)."""
    root = tmp_path / "m"
    manifest = data_files.manifest(root / "train.jsonl", rows_with_media(data_files, root, 13))
    info = write_shards(manifest, tmp_path / "shards", modalities=("image", "audio", "text"), tokenizer=tokenizer,
                        caption_field="caption", chunk_size=5)
    return manifest, tmp_path / "shards", info


def assert_same_item(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
        else:
            assert got[key] == value, key


def test_shard_samples_equal_the_manifest_samples_bit_for_bit(converted, tokenizer):
    manifest, shards, info = converted
    assert info["num_samples"] == 13 and info["classes"] == ["bus", "cat", "dog"] and info["captions"]
    for modalities in (["image", "audio", "text"], ["image", "text"], ["image", "audio"]):
        streamed = ShardDataset(shards, modalities, tokenizer, captions=True, image_size=24, sample_rate=16000,
                                max_audio_seconds=0.03, max_text_len=3)
        files = ManifestDataset(manifest, modalities, tokenizer, caption_field="caption", image_size=24,
                                sample_rate=16000, max_audio_seconds=0.03, max_text_len=3)
        assert len(streamed) == len(files) and streamed.chunk_sizes == [5, 5, 3]
        assert streamed.classes == files.classes and streamed.ids == files.ids
        for i in range(len(files)):
            assert_same_item(streamed[i], files[i])  # "source" names the manifest line too
        batch, reference = (collate_multimodal([d[i] for i in (3, 0, 12)], pad_id=0) for d in (streamed, files))
        assert batch.ids == reference.ids
        for name, value in reference.inputs.items():
            assert torch.equal(batch.inputs[name].data, value.data) and torch.equal(batch.inputs[name].mask, value.mask)


def test_the_bad_input_policy_is_the_manifest_one(tmp_path, data_files, tokenizer):
    root = tmp_path / "m"
    rows = rows_with_media(data_files, root, 30)
    (root / "images" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # bad content
    manifest = data_files.manifest(root / "train.jsonl", rows)
    with pytest.raises(ManifestError, match=r"train.jsonl:6: field 'image': cannot read image") as error:
        write_shards(manifest, tmp_path / "raise", tokenizer=tokenizer)  # every file is decoded once
    assert error.value.kind == "unreadable image" and error.value.line == 6
    rows[7]["image"] = "images/missing.png"  # bad row
    manifest = data_files.manifest(root / "train.jsonl", rows)
    with pytest.raises(ManifestError, match=r"train.jsonl:8: field 'image': file not found: images/missing.png"):
        write_shards(manifest, tmp_path / "raise", tokenizer=tokenizer)
    with pytest.raises(ManifestError, match="too many bad rows"):
        write_shards(manifest, tmp_path / "few", tokenizer=tokenizer, on_error="skip", max_bad_fraction=0.05)
    info = write_shards(manifest, tmp_path / "skip", tokenizer=tokenizer, on_error="skip", max_bad_fraction=0.1)
    assert info["skipped"] == {"unreadable image": 1, "file not found": 1} and info["num_samples"] == 28
    streamed = ShardDataset(tmp_path / "skip", ["image", "text"], tokenizer)
    assert "r5" not in streamed.ids and "r7" not in streamed.ids and len(streamed.ids) == 28


def test_conversion_refuses_to_overwrite_and_reading_checks_what_the_shards_hold(converted, tmp_path, tokenizer):
    manifest, shards, _ = converted
    with pytest.raises(FileExistsError, match="overwrite"):
        write_shards(manifest, shards, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"the shards hold \['image', 'audio', 'text'\]"):
        ShardDataset(shards, ["image", "video"])
    with pytest.raises(ManifestError, match=r"3 sample\(s\) have none of the modalities \['image'\] \(first: train.jsonl:4\)"):
        ShardDataset(shards, ["image"])  # as the manifest path: rows 4, 8 and 12 have no image
    with pytest.raises(ValueError, match="tokenizer is needed"):
        ShardDataset(shards, ["text"])
    with pytest.raises(ValueError, match=r"labels \['dog'\] of the shards are not among the classes"):
        ShardDataset(shards, ["image", "audio"], classes=["bus", "cat"])
    no_captions = tmp_path / "nocap"
    write_shards(manifest, no_captions, modalities=("image", "audio"), chunk_size=4)
    with pytest.raises(ValueError, match="without caption_field"):
        ShardDataset(no_captions, ["image", "audio"], tokenizer, captions=True)
    index = json.loads((no_captions / "index.json").read_text())
    del index["mmctx"]
    (no_captions / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="not shards written by mmctx"):
        ShardDataset(no_captions, ["image", "audio"])


def test_media_decode_from_bytes_with_the_same_checks(tmp_path, data_files):
    image = data_files.image(tmp_path / "a.png", size=(20, 12))
    assert read_image(io.BytesIO(image.read_bytes())).size == (20, 12)
    wav = data_files.audio(tmp_path / "a.wav", samples=800)
    data, rate = read_audio(io.BytesIO(wav.read_bytes()))
    assert data.shape == (800, 1) and rate == 16000
    cut = io.BytesIO(wav.read_bytes()[:-100])  # the data chunk declares more than the bytes hold
    with pytest.raises(MediaError) as error:
        read_audio(cut)
    assert error.value.kind == "truncated audio"


def epoch(sampler: ShardBatchSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return list(sampler)


def most_open_chunks(order: list[int], chunk_of: dict[int, int]) -> int:
    """The most chunks a reader of ``order`` has started and not finished at once."""
    last = {chunk_of[i]: k for k, i in enumerate(order)}
    started: set[int] = set()
    most = 0
    for k, i in enumerate(order):
        started.add(chunk_of[i])
        most = max(most, sum(1 for c in started if last[c] >= k))
    return most


def test_the_order_goes_shard_by_shard_and_depends_on_seed_and_epoch_only():
    sizes = [7, 3, 11, 5, 9]
    starts = [0, 7, 10, 21, 26]
    chunk_of = {i: c for c, (s, n) in enumerate(zip(starts, sizes)) for i in range(s, s + n)}
    one = ShardBatchSampler(sizes, batch_size=4, seed=3, shuffle_window=1)
    order = epoch(one, 0)
    assert sorted(order) == list(range(35))
    chunks = [chunk_of[i] for i in order]
    runs = [c for k, c in enumerate(chunks) if k == 0 or chunks[k - 1] != c]
    assert sorted(runs) == list(range(5)) and runs != sorted(runs)  # each chunk in one go, chunks shuffled
    assert order[: sizes[runs[0]]] != list(range(starts[runs[0]], starts[runs[0]] + sizes[runs[0]]))  # items too
    assert epoch(ShardBatchSampler(sizes, batch_size=4, seed=3, shuffle_window=1), 0) == order
    assert epoch(one, 1) != order and epoch(ShardBatchSampler(sizes, 4, seed=4, shuffle_window=1), 0) != order
    for window in (1, 2, 3):
        mixed = epoch(ShardBatchSampler(sizes, batch_size=4, seed=3, shuffle_window=window), 0)
        assert sorted(mixed) == list(range(35)) and most_open_chunks(mixed, chunk_of) <= window
    assert most_open_chunks(epoch(ShardBatchSampler(sizes, 4, seed=3, shuffle_window=5), 0), chunk_of) > 2
    assert ShardBatchSampler(sizes, 4, shuffle=False).epoch_order() == list(range(35))
    with pytest.raises(ValueError, match="shuffle_window"):
        ShardBatchSampler(sizes, 4, shuffle_window=0)


@pytest.mark.parametrize("sizes", [[7, 3, 11, 5, 9], [7, 3, 11, 5, 10], [1, 1, 30]])
def test_ranks_get_equal_batches_and_every_sample_on_uneven_shards(sizes):
    n, world, batch = sum(sizes), 2, 4
    ranks = [epoch(ShardBatchSampler(sizes, batch, seed=1, num_replicas=world, rank=r), 2) for r in range(world)]
    batches = [[order[k : k + batch] for k in range(0, len(order), batch)] for order in ranks]
    assert len(batches[0]) == len(batches[1]) and all(len(b) >= 1 for bs in batches for b in bs)
    assert len(batches[0]) == -(-n // (world * batch))  # the steps of one process with the global batch
    seen = [i for order in ranks for i in order]
    assert set(seen) == set(range(n))  # every sample, none dropped
    assert len(seen) - n == (-n) % world  # repeated: only the padding to a multiple of the world size
    # rank r's g-th batch is the r-th block of the one-process g-th global batch
    single = epoch(ShardBatchSampler(sizes, world * batch, seed=1), 2)
    for g in range(len(batches[0]) - 1):
        assert batches[0][g] + batches[1][g] == single[g * world * batch : (g + 1) * world * batch]


def test_skip_batches_resumes_the_epoch_where_it_stopped():
    sizes = [6, 9, 4]
    full = epoch(ShardBatchSampler(sizes, 4, seed=5, num_replicas=2, rank=1), 1)
    resumed = ShardBatchSampler(sizes, 4, seed=5, num_replicas=2, rank=1)
    resumed.set_epoch(1)
    resumed.skip_batches(2)
    assert list(resumed) == full[8:]
    assert list(resumed) == full  # the next pass is whole again


def test_streaming_data_module_batches_and_resume_state(converted, tokenizer):
    from mmctx.data import StreamingDataModule

    manifest, shards, _ = converted
    dm = StreamingDataModule(train_dir=str(shards), val_dir=str(shards), modalities=["image", "text"],
                             tokenizer=str(default_tokenizer_path()), batch_size=4, num_workers=0, seed=2,
                             image_size=16, shuffle_window=2)
    assert dm.classes == ["bus", "cat", "dog"] and dm.num_classes == 3 and dm.vocab_size == tokenizer.vocab_size
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, ShardBatchSampler) and loader.sampler.shuffle_window == 2
    loader.sampler.set_epoch(0)
    batches = list(loader)
    assert [len(b.ids) for b in batches] == [4, 4, 4, 1]
    order = list(loader.sampler)
    files = ManifestDataset(manifest, ["image", "text"], tokenizer, image_size=16)
    reference = collate_multimodal([files[i] for i in order[:4]], pad_id=tokenizer.pad_id)
    assert batches[0].ids == reference.ids and torch.equal(batches[0].targets["label"], reference.targets["label"])
    assert torch.equal(batches[0].inputs["image"].data, reference.inputs["image"].data)
    assert torch.equal(batches[0].inputs["text"].data, reference.inputs["text"].data)
    assert [len(b.ids) for b in dm.val_dataloader()] == [4, 4, 4, 1]

    state = dm.state_dict()
    assert state == {"train_order": {"chunk_sizes": [5, 5, 3], "seed": 2, "shuffle_window": 2, "batch_size": 4}}
    same = StreamingDataModule(train_dir=str(shards), modalities=["image", "audio"], batch_size=4, num_workers=0, seed=2,
                               shuffle_window=2)
    same.load_state_dict(state)
    same.setup("fit")
    same.train_dataloader()
    other = StreamingDataModule(train_dir=str(shards), modalities=["image", "audio"], batch_size=8, num_workers=0, seed=2,
                                shuffle_window=2)
    other.load_state_dict(state)
    other.setup("fit")
    with pytest.raises(ValueError, match=r"other \['batch_size'\].*would repeat or skip samples"):
        other.train_dataloader()
    assert dm.inference_state()["class_path"] == "mmctx.data.StreamingDataModule"


def test_streaming_loader_with_workers_gives_the_same_batches(converted):
    from mmctx.data import StreamingDataModule

    _, shards, _ = converted
    batches = []
    for workers in (0, 2):
        dm = StreamingDataModule(train_dir=str(shards), modalities=["image", "audio"], batch_size=5,
                                 num_workers=workers, seed=0)
        dm.setup("fit")
        batches.append(list(dm.train_dataloader()))
    for a, b in zip(*batches):
        assert a.ids == b.ids and torch.equal(a.inputs["audio"].data, b.inputs["audio"].data)


def test_the_command_line_converts_a_manifest(converted, tmp_path, capsys):
    from mmctx.data.shards import main

    manifest, shards, _ = converted
    main([str(manifest), str(tmp_path / "cli"), "--modalities", "image", "audio", "--label-field", "none",
          "--chunk-size", "6"])
    assert "13 samples of" in capsys.readouterr().out
    streamed = ShardDataset(tmp_path / "cli", ["image", "audio"])
    assert streamed.chunk_sizes == [6, 6, 1] and streamed.classes == [] and "label" not in streamed[0]
    assert torch.equal(streamed[5]["image"], ShardDataset(shards, ["image", "audio"])[5]["image"])
    with pytest.raises(SystemExit) as exit_:
        main([str(manifest), str(tmp_path / "cli")])  # not empty: refused in one line, no traceback
    assert exit_.value.code == 2 and "not empty; pass overwrite=True (--overwrite)" in capsys.readouterr().err
