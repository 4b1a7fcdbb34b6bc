"""CaptioningTask: the loss ignores padding and falls, a tiny captioner overfits a handful of
default-data captions exactly, evaluation writes readable outputs, predictions are JSONL rows,
checkpoints caption on their own, and the multimodal config's fusion switch works."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from mmctx.data import DefaultDataModule
from mmctx.encoders import TimmImageEncoder
from mmctx.fusion import ConcatFusion
from mmctx.heads import TextDecoder
from mmctx.metrics import distinct_ratio
from mmctx.models import EncoderDecoderModel
from mmctx.trainers import CaptioningTask, JsonlPredictionWriter

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


def datamodule(root: Path, batch_size: int = 8, **overrides) -> DefaultDataModule:
    args = dict(root=str(root), num_train=40, num_val=10, num_test=10, data_seed=0, modalities=["image"],
                caption_field="caption", label_field=None, max_text_len=16, batch_size=batch_size, num_workers=0)
    args.update(overrides)
    return DefaultDataModule(**args)


def tiny_captioner(dm: DefaultDataModule, dim: int = 32, seed: int = 0) -> EncoderDecoderModel:
    torch.manual_seed(seed)
    return EncoderDecoderModel(
        encoders={"image": TimmImageEncoder("resnet10t", out_dim=dim, stage=2)},
        fusion=ConcatFusion({"image": dim}, dim),
        decoder=TextDecoder(dm.vocab_size, dim, num_layers=2, num_heads=4, max_seq_len=16,
                            pad_id=dm.pad_id, bos_id=dm.bos_id, eos_id=dm.eos_id),
    )


def first_batch(dm: DefaultDataModule, split: str = "train"):
    dm.setup("fit" if split in ("train", "val") else split)
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    return next(iter(loader))


def test_encoder_decoder_model_shapes_gradients_and_width_checks(default_root):
    dm = datamodule(default_root, batch_size=3)
    batch = first_batch(dm)
    # the decoder may be narrower than the context it cross-attends
    model = EncoderDecoderModel(
        {"image": TimmImageEncoder("resnet10t", out_dim=16, stage=2)},
        ConcatFusion({"image": 16}, 24),
        TextDecoder(dm.vocab_size, 16, num_layers=1, num_heads=2, context_dim=24, max_seq_len=16,
                    pad_id=dm.pad_id, bos_id=dm.bos_id, eos_id=dm.eos_id),
    )
    ids, mask = batch.targets["caption"], batch.targets["caption_mask"]
    logits = model(batch, ids[:, :-1], mask[:, :-1])
    assert logits.shape == (3, ids.shape[1] - 1, dm.vocab_size)
    logits.logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    generated = model.eval().generate(batch, max_new_tokens=5, strategy="beam", num_beams=2)
    assert generated.shape[0] == 3 and generated.shape[1] <= 5 and model.decoder is model.head
    with pytest.raises(ValueError, match=r"fusion.out_dim=16 but head.context_dim=24"):
        EncoderDecoderModel({"image": TimmImageEncoder("resnet10t", out_dim=16, stage=2)}, ConcatFusion({"image": 16}, 16),
                            TextDecoder(dm.vocab_size, 16, num_heads=2, context_dim=24, bos_id=dm.bos_id))


def test_loss_ignores_padding_and_matches_cross_entropy_of_real_tokens(default_root):
    dm = datamodule(default_root, batch_size=4)
    batch = first_batch(dm)
    task = CaptioningTask(tiny_captioner(dm)).eval()
    loss = task.loss(batch)
    # by hand: logits at BOS..last word, targets first word..EOS, real positions only
    ids, mask = batch.targets["caption"], batch.targets["caption_mask"]
    logits = task.model(batch, ids[:, :-1], mask[:, :-1])
    real = mask[:, 1:]
    expected = torch.nn.functional.cross_entropy(logits[real], ids[:, 1:][real])
    torch.testing.assert_close(loss, expected)
    # three more padding columns change nothing
    pad = torch.full((ids.shape[0], 3), dm.pad_id)
    batch.targets["caption"] = torch.cat([ids, pad], 1)
    batch.targets["caption_mask"] = torch.cat([mask, torch.zeros_like(pad, dtype=torch.bool)], 1)
    torch.testing.assert_close(task.loss(batch), loss)


def test_tiny_captioner_overfits_a_handful_of_captions_exactly(default_root):
    """Training loss falls, then greedy generation reproduces every training caption, so the
    generated captions are as distinct as the references."""
    dm = datamodule(default_root, batch_size=6)
    batch = first_batch(dm)
    task = CaptioningTask(tiny_captioner(dm), max_new_tokens=12)
    task.tokenizer = dm.tokenizer
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    task.train()
    for _ in range(150):
        loss = task.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < 0.02:
            break
    assert losses[-1] < 0.1 * losses[0], losses[::10]
    task.eval()
    generated = task.caption(batch)
    references = batch.meta["caption_text"]
    assert generated == references
    assert distinct_ratio(generated) == distinct_ratio(references)


def test_construction_is_checked():
    class NoGenerate(torch.nn.Module):
        def encode(self, batch):
            return batch

    with pytest.raises(TypeError, match="no generate"):
        CaptioningTask(NoGenerate())
    dm = datamodule(Path("unused"))
    with pytest.raises(ValueError, match="strategy must be one of"):
        CaptioningTask(tiny_captioner(dm), strategy="nucleus")


def test_evaluation_outputs_predictions_and_a_self_contained_checkpoint(default_root, tmp_path):
    dm = datamodule(default_root, batch_size=4)
    task = CaptioningTask(tiny_captioner(dm), max_new_tokens=6, strategy="beam", num_beams=2, num_samples_to_log=3)
    logger = L.pytorch.loggers.TensorBoardLogger(tmp_path, name="cap", version=0)
    trainer = L.Trainer(max_steps=2, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0, logger=logger,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(task, datamodule=dm)
    run = tmp_path / "cap" / "version_0"
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    assert len((run / "captions_val.jsonl").read_text().splitlines()) == 4  # one val batch

    metrics = trainer.test(task, datamodule=dm, verbose=False)[0]
    names = {"loss", "bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "cider", "exact_match", "distinct", "ref_distinct"}
    assert {f"test/{n}" for n in names} <= set(metrics)
    rows = [json.loads(line) for line in (run / "captions_test.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and set(rows[0]) == {"id", "references", "generated"}
    assert rows[0]["id"] == "test-00000" and isinstance(rows[0]["references"], list)
    table = (run / "samples_test.txt").read_text()
    assert "| id" in table and "test-00002" in table and "test-00003" not in table  # 3 rows
    events = b"".join(p.read_bytes() for p in run.glob("events.out.tfevents.*"))
    assert b"test/samples" in events  # the table, in TensorBoard's Text tab

    out = tmp_path / "pred.jsonl"
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[JsonlPredictionWriter(str(out))], default_root_dir=tmp_path)
    trainer.predict(task, datamodule=dm, return_predictions=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 10 and {"input", "caption"} <= set(rows[0]) and rows[0]["input"] == "test-00000"

    # the checkpoint carries the tokenizer: the reloaded task captions without a data module
    ckpt = tmp_path / "cap.ckpt"
    trainer.save_checkpoint(ckpt)
    # built in Python, modules and the optimizer factory are left out of the hparams, so the
    # checkpoint loads without unpickling objects (weights_only=True)
    loaded = CaptioningTask.load_from_checkpoint(
        ckpt, model=tiny_captioner(dm, seed=1), map_location="cpu", weights_only=True
    ).eval()
    batch = first_batch(dm, "test")
    assert loaded.tokenizer is not None and loaded.hparams.strategy == "beam"
    assert loaded.caption(batch) == task.eval().caption(batch)


def test_multimodal_config_with_cross_attention_fusion(default_root, tmp_path, monkeypatch):
    """The documented command-line switch from concat to cross-attention fusion trains."""
    from mmctx.cli import main

    monkeypatch.chdir(tmp_path)
    fusion = "--model.init_args.model.init_args.fusion"
    main(["fit", f"--config={REPO / 'configs/caption_multimodal.yaml'}", "--trainer.fast_dev_run=1",
          "--trainer.enable_progress_bar=false", f"--data.root={default_root}", "--data.num_train=40",
          "--data.num_val=10", "--data.num_test=10", "--data.data_seed=0", "--data.num_workers=0",
          "--data.batch_size=4", f"{fusion}=mmctx.fusion.CrossAttentionFusion", f"{fusion}.query_modality=image",
          f"{fusion}.gated=false", f"{fusion}.append_context=true"])
    rows = [json.loads(line) for line in (tmp_path / "captions_val.jsonl").read_text().splitlines()]
    assert len(rows) == 4


def test_ctc_auxiliary_loss_trains_the_audio_encoder_and_names_a_bad_modality(default_root):
    """With ctc_weight, the loss is CE + w·CTC over the audio encoder's frames, every parameter
    (the task's CTC layer included) gets a gradient, and val/test loss stays the CE."""
    from mmctx.encoders import RNNAudioEncoder

    dm = datamodule(default_root, batch_size=3, modalities=["audio"], audio_field="caption_audio")
    batch = first_batch(dm)
    torch.manual_seed(0)
    model = EncoderDecoderModel(
        encoders={"audio": RNNAudioEncoder(n_mels=16, conv_channels=4, hidden_dim=8, num_layers=1, out_dim=16)},
        fusion=ConcatFusion({"audio": 16}, 16),
        decoder=TextDecoder(dm.vocab_size, 16, num_layers=1, num_heads=2, max_seq_len=16,
                            pad_id=dm.pad_id, bos_id=dm.bos_id, eos_id=dm.eos_id),
    )
    plain = CaptioningTask(model)
    task = CaptioningTask(model, ctc_weight=0.5)
    assert task.ctc_head.out_features == dm.vocab_size + 1
    parts = task.loss_parts(batch)
    assert set(parts) == {"ce", "ctc"} and parts["ctc"].item() > 0
    torch.testing.assert_close(parts["ce"], plain.loss(batch))
    torch.testing.assert_close(task.loss(batch), parts["ce"] + 0.5 * parts["ctc"])
    task.loss(batch).backward()
    missing = [n for n, p in task.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    with pytest.raises(ValueError, match=r"ctc_modality='image' has no encoder; the model has \['audio'\]"):
        CaptioningTask(model, ctc_weight=0.5, ctc_modality="image")


def test_label_auxiliary_loss_is_a_max_pooled_classifier_on_the_decoder_context(default_root):
    """With label_loss_weight, the loss is CE + w·CE(class) of a max-pooling classifier on the
    context the decoder reads: its value is the hand-computed one, its gradient reaches the
    encoders (not the decoder), weight 0 leaves the task as it was, and bad settings are named."""
    import torch.nn.functional as F

    dm = datamodule(default_root, batch_size=3, label_field="label")
    batch = first_batch(dm)
    model = tiny_captioner(dm, dim=16)
    plain = CaptioningTask(model)
    task = CaptioningTask(model, label_loss_weight=0.5, num_classes=dm.num_classes)
    assert plain.label_head is None and set(plain.loss_parts(batch)) == {"ce"}
    parts = task.loss_parts(batch)
    assert set(parts) == {"ce", "label"}
    torch.testing.assert_close(parts["ce"], plain.loss(batch))  # the same decoder loss
    torch.testing.assert_close(task.loss(batch), parts["ce"] + 0.5 * parts["label"])
    # by hand: masked max over the context tokens, LayerNorm, linear, cross-entropy
    with torch.no_grad():
        context = model.encode(batch)
        pooled = context.x.masked_fill(~context.mask[..., None], float("-inf")).amax(1)  # (B, D)
        norm, linear = task.label_head.norm, task.label_head.mlp[-1]
        logits = F.layer_norm(pooled, (16,), norm.weight, norm.bias) @ linear.weight.T + linear.bias  # (B, K)
        expected = -logits.log_softmax(-1).gather(1, batch.targets["label"][:, None]).mean()
    torch.testing.assert_close(parts["label"], expected, rtol=1e-5, atol=1e-6)
    # the auxiliary term alone trains the encoders and its own head, never the decoder
    task.zero_grad(set_to_none=True)
    parts["label"].backward()
    encoder_grad = sum(p.grad.abs().sum() for p in model.encoders.parameters() if p.grad is not None)
    assert encoder_grad > 0 and all(p.grad is not None for p in task.label_head.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())
    # evaluation loss stays the decoder's cross-entropy
    assert set(task.loss_parts(batch, with_aux=False)) == {"ce"}
    # bad settings fail loudly, naming the argument or the missing target
    with pytest.raises(ValueError, match="num_classes"):
        CaptioningTask(model, label_loss_weight=0.5)
    with pytest.raises(ValueError, match="label_loss_weight must be >= 0"):
        CaptioningTask(model, label_loss_weight=-1.0)
    with pytest.raises(ValueError, match="ctc_weight must be >= 0"):  # was silently ignored
        CaptioningTask(model, ctc_weight=-0.5)
    with pytest.raises(ValueError, match="label_loss_on must be 'context' or 'fusion'"):
        CaptioningTask(model, label_loss_weight=1.0, num_classes=4, label_loss_on="pooled")
    batch.targets.pop("label")
    with pytest.raises(KeyError, match=r"label_loss_weight > 0 needs targets\['label'\]"):
        task.loss_parts(batch)


def test_key_auxiliary_loss_reads_token_channels_as_key_class_logits(default_root):
    """With key_loss_weight, the tokens of key_modality inside targets["key_span"] are pushed to
    class targets["key_label"] (channel 1 + k), every other real token to background (channel
    0): the value is the hand-computed balanced cross-entropy, the gradient reaches that
    encoder only, weight 0 adds nothing, and bad settings or missing targets are named."""
    dm = datamodule(default_root, batch_size=3)
    batch = first_batch(dm)
    model = tiny_captioner(dm, dim=16)
    task = CaptioningTask(model, key_loss_weight=2.0, key_classes=3, key_modality="image")
    batch.targets["key_span"] = torch.tensor([[0, 1], [1, 3], [2, 3]])  # [start, stop) in image tokens
    batch.targets["key_label"] = torch.tensor([2, 0, 1])
    parts = task.loss_parts(batch)
    assert set(parts) == {"ce", "key"}
    torch.testing.assert_close(task.loss(batch), parts["ce"] + 2.0 * parts["key"])
    with torch.no_grad():  # by hand, token by token
        tokens = model.encode_modalities(batch.inputs)["image"]
        pos, neg = [], []
        for b in range(3):
            start, stop = batch.targets["key_span"][b].tolist()
            for t in range(tokens.x.shape[1]):
                if not tokens.mask[b, t]:
                    continue
                logp = tokens.x[b, t, :4].log_softmax(-1)
                if start <= t < stop:
                    pos.append(-logp[1 + batch.targets["key_label"][b]])
                else:
                    neg.append(-logp[0])
        expected = torch.stack(pos).mean() + torch.stack(neg).mean()
    torch.testing.assert_close(parts["key"], expected, rtol=1e-5, atol=1e-6)
    task.zero_grad(set_to_none=True)
    parts["key"].backward()
    assert sum(p.grad.abs().sum() for p in model.encoders["image"].parameters() if p.grad is not None) > 0
    assert all(p.grad is None for p in model.decoder.parameters())
    assert set(CaptioningTask(model).loss_parts(batch)) == {"ce"}
    with pytest.raises(ValueError, match="key_classes >= 1"):
        CaptioningTask(model, key_loss_weight=1.0, key_modality="image")
    with pytest.raises(ValueError, match=r"key_modality='text' has no encoder"):
        CaptioningTask(model, key_loss_weight=1.0, key_classes=3)
    with pytest.raises(ValueError, match="key_loss_weight must be >= 0"):
        CaptioningTask(model, key_loss_weight=-1.0, key_classes=3, key_modality="image")
    del batch.targets["key_span"]
    with pytest.raises(KeyError, match=r"needs targets \['key_span'\]"):
        task.loss_parts(batch)
