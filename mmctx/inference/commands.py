"""``mmctx caption CKPT FILE...`` and ``mmctx classify CKPT FILE...``: run a checkpoint (or an
exported folder) on files and print a table, or write JSONL (``--output``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["run_command"]

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aiff", ".aif"}
TEXT_SUFFIXES = {".txt"}


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"mmctx {command}", description=(
        "Caption (or transcribe) files with a trained checkpoint." if command == "caption"
        else "Classify files with a trained checkpoint."))
    parser.add_argument("checkpoint", help="a .ckpt written by `mmctx fit`, or a folder written by mmctx.export")
    parser.add_argument("files", nargs="+", help="images and/or audio files (by suffix); .txt files are texts")
    parser.add_argument("--text", help="one text given with every file (e.g. the question of a VQA-style model)")
    parser.add_argument("--output", "-o", help="write JSON lines here instead of printing a table")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=32)
    if command == "caption":
        parser.add_argument("--max-new-tokens", type=int)
        parser.add_argument("--strategy", choices=["greedy", "beam", "sample"])
        parser.add_argument("--num-beams", type=int)
        parser.add_argument("--length-penalty", type=float)
        parser.add_argument("--no-repeat-ngram-size", type=int)
        parser.add_argument("--repetition-penalty", type=float)
    else:
        parser.add_argument("--top-k", type=int, default=3)
    return parser


def _inputs(files: list[str], text: str | None, modalities: list[str]) -> dict[str, list]:
    """``images=`` / ``audio=`` / ``texts=`` lists, one entry per file."""
    kinds = []
    for name in files:
        suffix = Path(name).suffix.lower()
        kinds.append("audio" if suffix in AUDIO_SUFFIXES else "text" if suffix in TEXT_SUFFIXES else "image")
    inputs: dict[str, list] = {}
    for kind in sorted(set(kinds)):
        key = {"image": "images", "audio": "audio", "text": "texts"}[kind]
        values = []
        for name, k in zip(files, kinds):
            values.append((Path(name).read_text().strip() if kind == "text" else name) if k == kind else None)
        inputs[key] = values
    if text is not None:
        inputs["texts"] = [text] * len(files)
    if "text" in modalities and "texts" not in inputs and len(modalities) > 1:
        print(f"note: the model also reads text ({modalities}); give it with --text", file=sys.stderr)
    return inputs


def run_command(argv: list[str]) -> None:
    """Run ``mmctx caption ...`` or ``mmctx classify ...`` (``argv[0]`` is the command)."""
    from mmctx.inference.predictor import load

    command, rest = argv[0], argv[1:]
    args = _parser(command).parse_args(rest)
    predictor = load(args.checkpoint, device=args.device)
    inputs = _inputs(args.files, args.text, predictor.modalities)
    if command == "caption":
        generation = {k: getattr(args, k) for k in ("max_new_tokens", "strategy", "num_beams", "length_penalty",
                                                   "no_repeat_ngram_size", "repetition_penalty")}
        captions = predictor.caption(**inputs, batch_size=args.batch_size, **generation)
        rows = [{"file": f, "caption": c} for f, c in zip(args.files, captions)]
        columns = ("file", "caption")
    else:
        results = predictor.classify(**inputs, batch_size=args.batch_size, top_k=args.top_k)
        rows = [{"file": f, **r} for f, r in zip(args.files, results)]
        columns = ("file", "predicted", "score")
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(f"wrote {len(rows)} rows to {out}")
        return
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
