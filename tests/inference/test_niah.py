"""The NIAH evaluation: a tiny random long-context model runs at small lengths; an oracle
that reads the key colour scores 1 on the whole document and guesses beyond a truncation."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mmctx.context import ContextEncoder, StackedEncoder
from mmctx.data.builtin.long_range import LONG_RANGE_CLASSES, LONG_RANGE_COLOURS, long_range_tokenizer
from mmctx.data.builtin.niah import niah_samples
from mmctx.data.inference import InputEncoder
from mmctx.encoders import TextTransformerEncoder, TimmImageEncoder
from mmctx.fusion import ConcatFusion
from mmctx.heads import ClassifierHead
from mmctx.inference import Predictor
from mmctx.inference.niah import (
    NiahResult,
    decode_table,
    decode_timing,
    evaluate_niah,
    main,
    niah_heatmap,
    niah_table,
)
from mmctx.models import FusionModel

pytestmark = pytest.mark.usefixtures("one_thread")


def _predictor(model: nn.Module, max_text_len: int = 64) -> Predictor:
    tokenizer = long_range_tokenizer()
    encoder = InputEncoder(("image", "text"), tokenizer, LONG_RANGE_CLASSES, image_size=32, max_text_len=max_text_len)
    config = {"task": {"kind": "classification", "classes": LONG_RANGE_CLASSES}}
    return Predictor(model, encoder, "classification", config, {"init_args": {"image_size": 32}})


def _tiny_sliding_model() -> FusionModel:
    torch.manual_seed(0)
    vocab = long_range_tokenizer().vocab_size
    text = StackedEncoder(
        TextTransformerEncoder(vocab, dim=16, num_layers=0, max_seq_len=64),  # guard below the lengths asked
        ContextEncoder(16, num_layers=1, num_heads=2, mlp_ratio=2.0, window=4, num_global_tokens=1),
    )
    return FusionModel(
        encoders={"image": TimmImageEncoder("resnet10t", out_dim=16, stage=3), "text": text},
        fusion=ConcatFusion({"image": 16, "text": 16}, dim=16),
        head=ClassifierHead(16, num_classes=len(LONG_RANGE_CLASSES), pooling="max"),
    )


class _ColourOracle(nn.Module):
    """Reads the text ids: predicts "animals-<the first key colour it sees>" (red if none)."""

    def __init__(self) -> None:
        super().__init__()
        tokenizer = long_range_tokenizer()
        self.colour_ids = [tokenizer.encode(c)[0] for c in LONG_RANGE_COLOURS]
        self.encoders = nn.ModuleDict({"text": nn.Identity()})

    def forward(self, batch) -> torch.Tensor:
        ids, mask = batch.inputs["text"].data, batch.inputs["text"].mask
        logits = torch.zeros(ids.shape[0], len(LONG_RANGE_CLASSES))
        for b in range(ids.shape[0]):
            seen = [k for k, c in enumerate(self.colour_ids) if bool(((ids[b] == c) & mask[b]).any())]
            logits[b, LONG_RANGE_CLASSES.index(f"animals-{LONG_RANGE_COLOURS[seen[0] if seen else 0]}")] = 1.0
        return logits


def test_tiny_model_runs_past_its_length_guard_and_is_deterministic(tmp_path):
    predictor = _predictor(_tiny_sliding_model())
    first = evaluate_niah(predictor, lengths=[48, 200], depths=[0.0, 0.5, 1.0], samples=3, name="tiny")
    again = evaluate_niah(predictor, lengths=[48, 200], depths=[0.0, 0.5, 1.0], samples=3, name="tiny")
    assert first.acc == again.acc and len(first.acc) == 2 and all(len(r) == 3 for r in first.acc)
    assert all(0.0 <= a <= 1.0 for r in first.acc + first.colour_acc + first.category_acc for a in r)
    assert all(a * 3 == round(a * 3) for r in first.acc for a in r)  # fractions of 3 samples
    assert predictor.encoder.transform.max_text_len == 64  # restored
    table = niah_table(first)
    assert table.splitlines()[0].startswith("| length | 0 % | 50 % | 100 % | mean |") and "| 48 |" in table
    png = niah_heatmap(first, tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert NiahResult.from_json(first.to_json()) == first


def test_oracle_reads_every_depth_and_truncation_guesses_beyond_its_tokens():
    predictor = _predictor(_ColourOracle(), max_text_len=32)
    whole = evaluate_niah(predictor, lengths=[64, 256], depths=[0.0, 0.5, 1.0], samples=8)
    assert whole.colour_acc == [[1.0] * 3, [1.0] * 3]
    cut = evaluate_niah(predictor, lengths=[256], depths=[0.0, 1.0], samples=8, truncate=32)
    assert cut.colour_acc[0][0] == 1.0  # the needle is in the first 32 tokens
    hidden = [s.sample.colour == "red" for s in niah_samples(256, 1.0, 8)]  # the oracle's guess when blind
    assert cut.colour_acc[0][1] == sum(hidden) / 8 < 1.0


def test_rejects_a_checkpoint_of_another_task():
    predictor = _predictor(_ColourOracle())
    predictor.config = {"task": {"kind": "classification", "classes": ["cat", "dog"]}}
    with pytest.raises(ValueError, match="long-range"):
        evaluate_niah(predictor, lengths=[64], depths=[0.5], samples=1)


def test_command_writes_table_json_and_heatmap(tmp_path, monkeypatch):
    predictor = _predictor(_tiny_sliding_model())
    monkeypatch.setattr("mmctx.inference.niah.load", lambda path: predictor)
    out = tmp_path / "niah" / "tiny"
    main(["some.ckpt", "--out", str(out), "--lengths", "64", "--depths", "0", "1", "--samples", "2", "--name", "tiny"])
    assert "| 64 |" in out.with_suffix(".md").read_text()
    assert json.loads(out.with_suffix(".json").read_text())["lengths"] == [64]
    assert out.with_suffix(".png").stat().st_size > 1000


# ----------------------------------------------------------------------------- generation


def _generator_predictor(model: nn.Module, max_text_len: int = 64) -> Predictor:
    tokenizer = long_range_tokenizer(answers=True)
    encoder = InputEncoder(("image", "text"), tokenizer, None, image_size=32, max_text_len=max_text_len)
    config = {"task": {"kind": "captioning", "generation": {"max_new_tokens": 4, "strategy": "greedy"}}}
    return Predictor(model, encoder, "captioning", config, {"init_args": {"image_size": 32}})


def _tiny_answer_model() -> nn.Module:
    from mmctx.context import ChunkMaxPool
    from mmctx.heads import TextDecoder
    from mmctx.models import EncoderDecoderModel

    torch.manual_seed(0)
    tokenizer = long_range_tokenizer(answers=True)
    text = StackedEncoder(
        TextTransformerEncoder(tokenizer.vocab_size, dim=16, num_layers=0, max_seq_len=64),
        ContextEncoder(16, num_layers=1, num_heads=2, mlp_ratio=2.0, window=4, num_global_tokens=1),
    )
    return EncoderDecoderModel(
        encoders={"image": TimmImageEncoder("resnet10t", out_dim=16, stage=3), "text": text},
        fusion=ConcatFusion({"image": 16, "text": 16}, dim=16),
        context_encoder=ChunkMaxPool(16, chunk=8),
        decoder=TextDecoder(tokenizer.vocab_size, dim=16, num_layers=1, num_heads=2, max_seq_len=6,
                            pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, length_scale_ref=20),
    )


class _AnswerOracle(nn.Module):
    """Generates "<the first key colour in the text> animals" (red if none)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokenizer = long_range_tokenizer(answers=True)
        self.colour_ids = [self.tokenizer.encode(c)[0] for c in LONG_RANGE_COLOURS]
        self.encoders = nn.ModuleDict({"text": nn.Identity()})

    def generate(self, batch, max_new_tokens: int, **settings) -> torch.Tensor:
        ids, mask = batch.inputs["text"].data, batch.inputs["text"].mask
        rows = []
        for b in range(ids.shape[0]):
            seen = [c for c in self.colour_ids if bool(((ids[b] == c) & mask[b]).any())]
            rows.append([seen[0] if seen else self.colour_ids[0], *self.tokenizer.encode("animals"), self.tokenizer.eos_id])
        return torch.tensor(rows)


def test_generation_path_scores_exact_match_colour_and_category_per_cell(tmp_path):
    predictor = _generator_predictor(_AnswerOracle())
    result = evaluate_niah(predictor, lengths=[64, 256], depths=[0.0, 0.5, 1.0], samples=6, name="oracle")
    assert result.kind == "generation"
    assert result.colour_acc == [[1.0] * 3, [1.0] * 3]  # it reads the key colour at every depth
    for i, length in enumerate([64, 256]):
        for j, depth in enumerate([0.0, 0.5, 1.0]):
            animals = sum(s.sample.category == "animals" for s in niah_samples(length, depth, 6)) / 6
            assert result.category_acc[i][j] == result.acc[i][j] == animals  # exact iff the category is animals
    assert all(e["generated"].endswith("animals") and e["expected"] != e["generated"] for e in result.examples)
    assert niah_table(result, "colour").splitlines()[2].startswith("| 64 | 1.00 | 1.00 | 1.00 |")


def test_tiny_generator_runs_past_its_length_guard_and_times_its_decoding(tmp_path, monkeypatch):
    predictor = _generator_predictor(_tiny_answer_model())
    first = evaluate_niah(predictor, lengths=[48, 200], depths=[0.0, 0.5, 1.0], samples=2, name="tiny")
    again = evaluate_niah(predictor, lengths=[48, 200], depths=[0.0, 0.5, 1.0], samples=2, name="tiny")
    assert first.acc == again.acc and len(first.acc) == 2 and all(len(r) == 3 for r in first.acc + first.colour_acc)
    assert all(a in (0.0, 0.5, 1.0) for r in first.acc for a in r)
    assert predictor.encoder.transform.max_text_len == 64  # restored
    rows = decode_timing(predictor, [48, 200], repeats=1)
    assert [r["length"] for r in rows] == [48, 200] and all(r["same"] and r["new_tokens"] == 5 for r in rows)
    assert all(r["cached_ms"] > 0 and r["kv_ms"] > 0 for r in rows) and predictor.model.decoder.eos_id is not None
    assert decode_table(rows).count("\n") == 3
    # the command: exact-match table, colour and category tables, decode table, JSON, heatmap
    monkeypatch.setattr("mmctx.inference.niah.load", lambda path: predictor)
    out = tmp_path / "niah" / "tiny"
    main(["some.ckpt", "--out", str(out), "--lengths", "64", "--depths", "0", "1", "--samples", "1", "--decode-repeats", "1"])
    text = out.with_suffix(".md").read_text()
    assert "exact match" in text and "Colour word" in text and "cached ms/token" in text
    saved = NiahResult.from_json(out.with_suffix(".json").read_text())
    assert saved.kind == "generation" and saved.decode[0]["length"] == 64
    assert out.with_suffix(".png").stat().st_size > 1000


def test_generation_rejects_a_tokenizer_without_the_answer_words():
    predictor = _generator_predictor(_AnswerOracle())
    predictor.encoder.tokenizer = long_range_tokenizer()  # the classification vocabulary: no category words
    with pytest.raises(ValueError, match="answer words"):
        evaluate_niah(predictor, lengths=[64], depths=[0.5], samples=1)
