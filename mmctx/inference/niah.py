"""Needle-in-a-haystack evaluation of a trained long-range checkpoint: accuracy by context
length × needle depth, as a markdown table, a JSON file and a heatmap PNG.

Two kinds of checkpoint: a *classifier* of the 16 ``"<category>-<colour>"`` classes (accuracy
= the class is right), and a *generator* (a captioning checkpoint trained with
``LongRangeDataModule(output="answer")``): it writes the answer ``"<colour> <category>"``
greedily for each document, scored by exact match (and colour-word and category-word
accuracy); for it the evaluation also times decoding against each context length (the
context's cross-attention keys/values computed once, then ms per generated token; see
:func:`decode_timing`).

    python -m mmctx.inference.niah runs/long_context_windowed/version_0/checkpoints/best.ckpt \\
        --out docs/niah/windowed --lengths 1024 4096 16384 65536 --samples 16

(``python benchmarks/niah.py ...`` is the same command.) The checkpoint is loaded with
:func:`mmctx.load`; the documents are fresh :mod:`mmctx.data.builtin.niah` samples (exact
length, needle at the asked depth) with their pictures, preprocessed as the training data
was. The model reads the *whole* document (``truncate=None``): the training data's
``max_text_len`` and the text encoder's ``max_seq_len`` are training-time length guards, not
position tables (the text encoders' positions are RoPE, computed), so they are lifted to the
document's length. ``truncate=N`` keeps the first N tokens instead: the truncation baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from mmctx.data.builtin.asset_pack import AssetPack
from mmctx.data.builtin.long_range import LONG_RANGE_CATEGORIES, LONG_RANGE_COLOURS
from mmctx.data.builtin.niah import NIAH_DEPTHS, NIAH_LENGTHS, NeedleSample, niah_samples
from mmctx.inference.predictor import Predictor, load

__all__ = ["NiahResult", "decode_table", "decode_timing", "evaluate_niah", "niah_heatmap", "niah_table", "main"]


@dataclass
class NiahResult:
    """Accuracies of one model, ``acc[i][j]`` at ``lengths[i]`` and ``depths[j]``.

    Attributes:
        name: what was evaluated (a variant's name or the checkpoint's path).
        lengths: document lengths in tokens.
        depths: needle depths in [0, 1].
        samples: samples per cell.
        acc: accuracy (label = category and key colour both right; a generator: the answer
            generated equals ``"<colour> <category>"`` exactly) per cell.
        colour_acc: key-colour accuracy per cell (the text side; chance 0.25); a generator:
            its first word is the key colour.
        category_acc: category accuracy per cell (the picture side); a generator: its second
            word is the category.
        truncate: tokens the model read (None: the whole document).
        seconds: per length, the wall time of its row.
        kind: ``"classification"`` or ``"generation"``.
        decode: a generator's decode timing per length (:func:`decode_timing`'s rows).
        examples: a generator's first wrong answers (at most 20): length, depth, expected, generated.
    """

    name: str
    lengths: list[int]
    depths: list[float]
    samples: int
    acc: list[list[float]] = field(default_factory=list)
    colour_acc: list[list[float]] = field(default_factory=list)
    category_acc: list[list[float]] = field(default_factory=list)
    truncate: int | None = None
    seconds: list[float] = field(default_factory=list)
    kind: str = "classification"
    decode: list[dict] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)

    def min_acc(self) -> float:
        """The worst cell."""
        return min(min(row) for row in self.acc)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> NiahResult:
        return cls(**json.loads(text))


def _lift_length_guard(model: nn.Module, length: int) -> None:
    """Let the text encoder take ``length`` tokens (its ``max_seq_len`` guard, not a table)."""
    encoders = getattr(model, "encoders", None)
    text = encoders["text"] if encoders is not None and "text" in encoders else None
    if text is None:
        raise ValueError(f"NIAH: the model ({type(model).__name__}) has no 'text' encoder")
    for module in (text, getattr(text, "encoder", None)):
        # a StackedEncoder copies its token encoder's guard; the wrappers that cut the text
        # into windows or chunks (OverlappingWindowEncoder) have none
        if module is not None and isinstance(getattr(module, "max_seq_len", None), int):
            module.max_seq_len = max(module.max_seq_len, length)


@torch.no_grad()
def evaluate_niah(
    predictor: Predictor,
    lengths: Sequence[int] = NIAH_LENGTHS,
    depths: Sequence[float] = NIAH_DEPTHS,
    samples: int = 16,
    seed: int = 0,
    truncate: int | None = None,
    batch_size: int = 8,
    name: str = "model",
    log: bool = False,
) -> NiahResult:
    """Accuracy of a long-range classifier on NIAH documents, per length and depth.

    Args:
        predictor: a loaded long-range checkpoint (:func:`mmctx.load`); it must classify
            into the 16 long-range classes ``"<category>-<colour>"`` from image + text.
        lengths: document lengths in tokens.
        depths: needle depths in [0, 1].
        samples: fresh samples per cell.
        seed: the NIAH seed (``"mmctx-niah:<seed>:..."`` streams).
        truncate: read only the first ``truncate`` tokens (None: the whole document).
        batch_size: documents per forward pass.
        name: the result's name.
        log: print each row as it is done.

    Returns:
        A :class:`NiahResult`.

    Raises:
        ValueError: the checkpoint's classes are not the long-range classes.
    """
    if predictor.task == "captioning":
        return _evaluate_generation(predictor, lengths, depths, samples, seed, truncate, batch_size, name, log)
    classes = predictor.classes
    if not classes or any("-" not in c for c in classes):
        raise ValueError(f"NIAH: the checkpoint's classes {classes} are not the long-range task's '<category>-<colour>'")
    colour_of = [c.split("-", 1)[1] for c in classes]
    category_of = [c.split("-", 1)[0] for c in classes]
    unknown = set(colour_of) - set(LONG_RANGE_COLOURS)
    if unknown:
        raise ValueError(f"NIAH: the checkpoint's classes name colours {sorted(unknown)} the long-range task has not")

    def score(cell: list[NeedleSample]) -> list[tuple[bool, bool, bool, str | None]]:
        logits = predictor.logits(images=[s.image for s in cell], texts=[s.sample.text for s in cell], batch_size=batch_size)
        return [
            (classes[p] == f"{s.sample.category}-{s.sample.colour}", colour_of[p] == s.sample.colour,
             category_of[p] == s.sample.category, None)
            for p, s in zip(logits.argmax(-1).tolist(), cell)
        ]

    result = NiahResult(name, list(lengths), list(depths), samples, truncate=truncate)
    return _sweep(predictor, result, seed, score, log)


def _sweep(
    predictor: Predictor,
    result: NiahResult,
    seed: int,
    score: Callable[[list[NeedleSample]], list[tuple[bool, bool, bool, str | None]]],
    log: bool,
) -> NiahResult:
    """Fill ``result`` cell by cell (its lengths × depths, ``result.samples`` fresh documents
    each): ``score`` gives, per document of a cell, (exact, colour right, category right, the
    generated answer or None); a generator's first 20 wrong answers go to ``result.examples``."""
    pack = AssetPack()
    # render the pictures as the training data's generator did (the transform then resizes)
    image_size = int((predictor.data_state or {}).get("init_args", {}).get("image_size") or 32)
    predictor.model.eval()
    transform = predictor.encoder.transform
    saved = transform.max_text_len
    n = result.samples
    try:
        for length in result.lengths:
            start = time.perf_counter()
            transform.max_text_len = result.truncate if result.truncate is not None else length
            if result.truncate is None:
                _lift_length_guard(predictor.model, length)
            row, colour_row, category_row = [], [], []
            for depth in result.depths:
                cell = niah_samples(length, depth, n, seed, pack, image_size)
                scores = score(cell)
                row.append(sum(x[0] for x in scores) / n)
                colour_row.append(sum(x[1] for x in scores) / n)
                category_row.append(sum(x[2] for x in scores) / n)
                for x, s in zip(scores, cell):
                    if x[3] is not None and not x[0] and len(result.examples) < 20:
                        result.examples.append(
                            {"length": length, "depth": depth, "expected": s.sample.answer, "generated": x[3]}
                        )
            result.acc.append(row)
            result.colour_acc.append(colour_row)
            result.category_acc.append(category_row)
            result.seconds.append(round(time.perf_counter() - start, 1))
            if log:
                cells = " ".join(f"{a:.2f}" for a in row)
                if result.kind == "generation":
                    cells = f"exact {cells} | colour {sum(colour_row) / len(colour_row):.3f}"
                print(f"{result.name} {length:>7} tokens: {cells}  ({result.seconds[-1]:.0f} s)", flush=True)
    finally:
        transform.max_text_len = saved
    return result


def _answer_scores(answer: str, sample: NeedleSample) -> tuple[bool, bool, bool]:
    """(exact match, colour word right, category word right) of a generated answer."""
    words = answer.split()
    colour = len(words) >= 1 and words[0] == sample.sample.colour
    category = len(words) >= 2 and words[1] == sample.sample.category
    return answer == sample.sample.answer, colour, category


@torch.no_grad()
def _evaluate_generation(
    predictor: Predictor,
    lengths: Sequence[int],
    depths: Sequence[float],
    samples: int,
    seed: int,
    truncate: int | None,
    batch_size: int,
    name: str,
    log: bool,
) -> NiahResult:
    """:func:`evaluate_niah` for a generator: greedy answers, exact match per cell."""
    tokenizer = predictor.encoder.tokenizer
    words = (*LONG_RANGE_COLOURS, *LONG_RANGE_CATEGORIES)
    missing = [w for w in words if tokenizer is None or tokenizer.encode(w) in ([], [tokenizer.unk_id])]
    if missing:
        raise ValueError(
            f"NIAH: the checkpoint's tokenizer lacks the answer words {missing}: not a long-range answer generator "
            "(LongRangeDataModule(output='answer'))"
        )

    def score(cell: list[NeedleSample]) -> list[tuple[bool, bool, bool, str | None]]:
        answers = predictor.caption(
            images=[s.image for s in cell], texts=[s.sample.text for s in cell], batch_size=batch_size, strategy="greedy"
        )
        return [(*_answer_scores(a, s), a) for a, s in zip(answers, cell)]

    result = NiahResult(name, list(lengths), list(depths), samples, truncate=truncate, kind="generation")
    return _sweep(predictor, result, seed, score, log)


@torch.no_grad()
def decode_timing(
    predictor: Predictor, lengths: Sequence[int], new_tokens: int | None = None, repeats: int = 3, seed: int = 0
) -> list[dict]:
    """Decode time per token of a generator against the context length, as
    ``benchmarks/decode_long_context.py`` measures it, for the trained model on one NIAH
    document per length (needle at 50 %).

    Per length: the document is encoded once (``encode_s``: encoders, fusion, context
    encoder); then, medians of ``repeats`` interleaved runs, ``kv_ms`` the context's
    cross-attention keys/values (:meth:`~mmctx.heads.TextDecoder.init_cache`), ``cached_ms``
    per generated token through the KV cache (the greedy ``generate`` call minus its
    ``kv_ms``), ``recomputed_ms`` per token with ``use_cache=False`` (every step recomputes
    the context's keys/values), and ``same`` whether both produced the same tokens. The
    decoder's ``eos_id`` is lifted during the timing, so every call generates ``new_tokens``
    tokens (default: the decoder's ``max_seq_len - 1``).

    Returns:
        One dict per length: ``length``, ``encode_s``, ``kv_ms``, ``cached_ms``,
        ``recomputed_ms``, ``same``, ``new_tokens``.
    """
    model = predictor.model.eval()
    decoder = getattr(model, "decoder", None)
    if decoder is None or not callable(getattr(decoder, "init_cache", None)):
        raise ValueError(f"decode_timing: the model ({type(model).__name__}) has no decoder with a KV cache")
    new_tokens = new_tokens or decoder.max_seq_len - 1
    pack = AssetPack()
    image_size = int((predictor.data_state or {}).get("init_args", {}).get("image_size") or 32)
    transform = predictor.encoder.transform
    saved_len, saved_eos = transform.max_text_len, decoder.eos_id
    rows = []
    try:
        decoder.eos_id = None  # a fixed number of tokens per call
        for length in lengths:
            transform.max_text_len = length
            _lift_length_guard(model, length)
            sample = niah_samples(length, 0.5, 1, seed, pack, image_size)[0]
            batch = next(predictor.batches(images=[sample.image], texts=[sample.sample.text], batch_size=1))
            start = time.perf_counter()
            context = model.encode(batch)
            encode_s = time.perf_counter() - start
            decoder.generate(context, 1)  # warm-up at this size
            kv, cached, recomputed, out = [], [], [], {}
            for _ in range(repeats):
                start = time.perf_counter()
                cache = decoder.init_cache(context, capacity=new_tokens + 1)
                kv.append(time.perf_counter() - start)
                del cache
                start = time.perf_counter()
                out[True] = decoder.generate(context, new_tokens)
                cached.append(time.perf_counter() - start)
                start = time.perf_counter()
                out[False] = decoder.generate(context, new_tokens, use_cache=False)
                recomputed.append(time.perf_counter() - start)
            kv_ms = statistics.median(kv) * 1e3
            rows.append({
                "length": length,
                "encode_s": round(encode_s, 4),
                "kv_ms": round(kv_ms, 3),
                "cached_ms": round((statistics.median(cached) * 1e3 - kv_ms) / new_tokens, 4),
                "recomputed_ms": round(statistics.median(recomputed) * 1e3 / new_tokens, 4),
                "same": bool(torch.equal(out[True], out[False])),
                "new_tokens": new_tokens,
            })
    finally:
        transform.max_text_len, decoder.eos_id = saved_len, saved_eos
    return rows


def decode_table(rows: Sequence[dict]) -> str:
    """:func:`decode_timing`'s rows as a markdown table."""
    lines = [
        "| context tokens | encode s | context K/V ms | cached ms/token | recomputed ms/token | speed-up | same tokens |",
        "|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        speedup = r["recomputed_ms"] / r["cached_ms"] if r["cached_ms"] > 0 else float("nan")
        lines.append(
            f"| {r['length']:,} | {r['encode_s']:.3f} | {r['kv_ms']:.2f} | {r['cached_ms']:.3f} | "
            f"{r['recomputed_ms']:.3f} | {speedup:.1f}x | {'yes' if r['same'] else 'NO'} |"
        )
    return "\n".join(lines)


def _length_label(length: int) -> str:
    return f"{length // 1024}K" if length % 1024 == 0 else str(length)


def niah_table(result: NiahResult, which: str = "acc") -> str:
    """The accuracies as a markdown table: a row per length, a column per depth, and the mean.

    Args:
        result: the evaluation.
        which: ``"acc"`` (the task's accuracy or exact match), ``"colour"`` or ``"category"``.
    """
    cells = {"acc": result.acc, "colour": result.colour_acc, "category": result.category_acc}
    if which not in cells:
        raise ValueError(f"niah_table: which must be one of {list(cells)}, got {which!r}")
    head = "| length | " + " | ".join(f"{round(d * 100)} %" for d in result.depths) + " | mean |"
    rule = "|---|" + "---|" * (len(result.depths) + 1)
    rows = [head, rule]
    for length, row in zip(result.lengths, cells[which]):
        cells = " | ".join(f"{a:.2f}" for a in row)
        rows.append(f"| {_length_label(length)} | {cells} | **{sum(row) / len(row):.3f}** |")
    return "\n".join(rows)


def niah_heatmap(result: NiahResult, path: str | Path, title: str | None = None) -> Path:
    """Draw the accuracies as a heatmap PNG (x: context length, y: needle depth, 0 % on top),
    red (0) to green (1), each cell annotated. Needs matplotlib (the ``dev`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = torch.tensor(result.acc).T.numpy()  # (depths, lengths)
    fig, ax = plt.subplots(figsize=(2.4 + 0.9 * len(result.lengths), 0.9 + 0.32 * len(result.depths)), dpi=100)
    image = ax.imshow(acc, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(result.lengths)), [_length_label(n) for n in result.lengths])
    ax.set_yticks(range(len(result.depths)), [f"{round(d * 100)} %" for d in result.depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            ax.text(j, i, f"{acc[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title(title or result.name, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> NiahResult:
    """``python -m mmctx.inference.niah CKPT --out PREFIX``: evaluate, then write
    ``PREFIX.md`` (table), ``PREFIX.json`` (every number) and ``PREFIX.png`` (heatmap)."""
    parser = argparse.ArgumentParser(prog="python -m mmctx.inference.niah", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a long-range checkpoint (.ckpt) or exported folder")
    parser.add_argument("--out", type=Path, required=True, help="output prefix: PREFIX.md, PREFIX.json, PREFIX.png")
    parser.add_argument("--name", default=None, help="the model's name in the table and the heatmap's title")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(NIAH_LENGTHS))
    parser.add_argument("--depths", type=float, nargs="+", default=list(NIAH_DEPTHS))
    parser.add_argument("--samples", type=int, default=16, help="samples per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truncate", type=int, default=None, help="read only the first N tokens (the baseline)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--decode-repeats", type=int, default=3,
                        help="a generator: repeats of the decode timing per length (0: no timing)")
    parser.add_argument("--length-scale-ref", type=int, default=None,
                        help="a generator: override its decoder's length_scale_ref (0: off), for an ablation")
    args = parser.parse_args(argv)
    name = args.name or str(args.checkpoint)
    predictor = load(args.checkpoint)
    if args.length_scale_ref is not None:
        decoder = getattr(predictor.model, "decoder", None)
        if decoder is None or not hasattr(decoder, "length_scale_ref"):
            raise SystemExit(f"--length-scale-ref: {args.checkpoint} has no TextDecoder")
        decoder.length_scale_ref = args.length_scale_ref or None
    result = evaluate_niah(predictor, args.lengths, args.depths, args.samples, args.seed, args.truncate,
                           args.batch_size, name, log=True)
    generation = result.kind == "generation"
    if generation and args.decode_repeats > 0:
        result.decode = decode_timing(predictor, args.lengths, repeats=args.decode_repeats, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = niah_table(result)
    read = f"first {args.truncate} tokens" if args.truncate else "whole document"
    metric = "exact match of the generated answer" if generation else "accuracy"
    text = (f"NIAH {metric} of {name} ({args.samples} samples per cell, {read}, seed {args.seed}; "
            f"worst cell {result.min_acc():.2f})\n\n{table}\n")
    if generation:
        text += f"\nColour word (the key sentence's) right:\n\n{niah_table(result, 'colour')}\n"
        text += f"\nCategory word (the picture's) right:\n\n{niah_table(result, 'category')}\n"
        if result.decode:
            load_avg = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
            text += (f"\nDecode time against the context length (one document, greedy, "
                     f"{result.decode[0]['new_tokens']} tokens, median of {args.decode_repeats}; "
                     f"{torch.get_num_threads()} thread(s){load_avg}):\n\n{decode_table(result.decode)}\n")
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(result.to_json() + "\n")
    what = "exact match" if generation else "accuracy"
    niah_heatmap(result, args.out.with_suffix(".png"), f"{name}: NIAH {what} ({read})")
    print(text)
    return result


if __name__ == "__main__":
    main()
