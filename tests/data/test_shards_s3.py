"""Shards streamed from an object store: an S3-compatible server (moto's, started on
127.0.0.1 by the test; no network) serves a converted split, and the samples read through
``s3://`` equal the local ones."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("litdata")
boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture
def s3_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_streaming_from_s3_gives_the_local_samples(tmp_path, data_files, s3_endpoint):
    from mmctx.data import StreamingDataModule
    from mmctx.data.shards import ShardDataset, write_shards

    root = tmp_path / "m"
    rows = []
    for i in range(9):
        data_files.image(root / "images" / f"{i}.png", size=(12 + i, 10), color=(20 * i, 100, 50))
        data_files.audio(root / "audio" / f"{i}.wav", samples=300 + 50 * i, value=0.02 * (i + 1))
        rows.append({"id": f"s{i}", "image": f"images/{i}.png", "audio": f"audio/{i}.wav", "label": str(i % 2)})
    manifest = data_files.manifest(root / "train.jsonl", rows)
    local = tmp_path / "shards"
    write_shards(manifest, local, modalities=("image", "audio"), chunk_size=4)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="data")
    for path in local.iterdir():
        s3.upload_file(str(path), "data", f"shards/train/{path.name}")

    options = {"endpoint_url": s3_endpoint}
    remote = ShardDataset("s3://data/shards/train", ["image", "audio"], storage_options=options,
                          cache_dir=str(tmp_path / "cache"))
    near = ShardDataset(local, ["image", "audio"])
    assert len(remote) == 9 and remote.chunk_sizes == [4, 4, 1] and remote.classes == ["0", "1"]
    for i in range(len(near)):
        a, b = remote[i], near[i]
        assert a["id"] == b["id"] and a["label"] == b["label"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["audio"], b["audio"])

    dm = StreamingDataModule(train_dir="s3://data/shards/train", modalities=["image", "audio"], batch_size=4,
                             num_workers=0, storage_options=options, cache_dir=str(tmp_path / "cache2"))
    dm.setup("fit")
    ids = [i for batch in dm.train_dataloader() for i in batch.ids]
    assert sorted(ids) == [f"s{i}" for i in range(9)]
