"""Spoken long context: constant inference memory from 1 to 60 minutes of audio, and accuracy.

The model of ``configs/long_context/spoken_memory.yaml`` (audio encoder in a
:class:`~mmctx.context.StreamingMemoryEncoder`: 2 s segments, 4 memory tokens; the head reads
a running per-channel max over all segment tokens and the final memory, 1 + 4 tokens) reads a spoken stream (:mod:`mmctx.data.builtin.spoken_long`) with
its key word at a chosen depth, **streamed**: the stream is rendered 2 s at a time and each
piece goes through :meth:`StreamingMemoryEncoder.stream`, so one segment is alive at a time.

Two tables:

* memory: for each duration (default 1, 5, 15, 30, 60 minutes) a fresh subprocess streams one
  stream under ``torch.no_grad()`` and reports its peak resident set size (``ru_maxrss``:
  the whole process) and the peak added by the stream itself (Δpeak: the peak minus the
  peak reached after building the model and a 10 s warm-up stream); the ratio to the
  1-minute row is the constancy check (target ±10 %). With ``--one-pass-minutes`` the same
  is measured for the one-pass forward (the whole waveform in memory), for contrast;
* accuracy (with ``--ckpt``, a trained checkpoint): fresh streams (their own seeds, never
  the training ones) of each duration with the key word at depths 0 %, 25 %, ..., 100 % of
  the stream, ``--streams`` per cell; streams of up to 2 minutes are batched through the
  one-pass forward (equal to streaming, tests/context/wrappers/test_streaming_memory.py),
  longer ones streamed one by one.

    python benchmarks/spoken_long_context.py --ckpt runs/spoken_memory/version_0/checkpoints/best.ckpt
    python benchmarks/spoken_long_context.py --no-accuracy          # memory table only (random weights)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MIB = 1024**2
PIECE_SECONDS = 2.0


def load_model(ckpt: str | None):  # noqa: ANN201 - a FusionModel
    """The trained model of a checkpoint, or the config's architecture with random weights."""
    import torch

    if ckpt:
        from mmctx.trainers import ClassificationTask

        return ClassificationTask.load_from_checkpoint(ckpt, map_location="cpu").model.eval()
    from mmctx.context import RecurrentMemoryEncoder, StreamingMemoryEncoder
    from mmctx.encoders import RNNAudioEncoder
    from mmctx.fusion import ConcatFusion
    from mmctx.heads import ClassifierHead
    from mmctx.models import FusionModel

    torch.manual_seed(0)
    audio = RNNAudioEncoder(16000, 32, 400, 160, conv_channels=32, hidden_dim=32, num_layers=1, out_dim=32)
    memory = RecurrentMemoryEncoder(32, 1, 2, segment_len=64, num_memory=4, bptt_segments=8, mlp_ratio=2.0)
    encoder = StreamingMemoryEncoder(audio, memory, segment_len=32000, context_len=10240, readout="max")
    head = ClassifierHead(32, 4, pooling="max")
    return FusionModel({"audio": encoder}, ConcatFusion({"audio": 32}, 32), head).eval()


def stream_logits(model, stream):  # noqa: ANN001, ANN201 - FusionModel, SpokenStream → (1, K)
    """Stream one spoken stream through the model, 2 s pieces rendered on the fly."""
    import torch

    from mmctx.data.builtin.spoken_long import SPOKEN_SAMPLE_RATE

    pieces = (torch.from_numpy(p)[None] for p in stream.chunks(int(PIECE_SECONDS * SPOKEN_SAMPLE_RATE)))
    memory = model.encoders["audio"].stream(pieces)
    return model.head(model.fuse({"audio": memory}))


def batch_logits(model, streams):  # noqa: ANN001, ANN201 - one-pass forward of a padded batch → (B, K)
    import torch

    from mmctx.types import ModalityInput

    S = max(s.num_samples for s in streams)
    data = torch.zeros(len(streams), S)
    mask = torch.zeros(len(streams), S, dtype=torch.bool)
    for b, s in enumerate(streams):
        data[b, : s.num_samples] = torch.from_numpy(s.render())
        mask[b, : s.num_samples] = True
    return model({"audio": ModalityInput(data, mask)})


def child(args: argparse.Namespace) -> None:
    """One memory measurement in this process; prints a JSON line."""
    import torch

    from mmctx.data.builtin.spoken_long import make_stream

    torch.set_num_threads(1)
    model = load_model(args.ckpt)
    with torch.no_grad():
        stream_logits(model, make_stream("bench-warmup", 10.0))  # warm-up: kernels, the pack's recordings
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        stream = make_stream(f"bench-memory-{args.minutes}", args.minutes * 60.0, depth=0.5)
        start = time.perf_counter()
        if args.mode == "stream":
            logits = stream_logits(model, stream)
        else:
            logits = batch_logits(model, [stream])
        elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    enc = model.encoders["audio"]
    print(json.dumps({
        "peak": peak, "base": base, "time": elapsed, "samples": stream.num_samples,
        "segments": -(-stream.num_samples // enc.segment_len), "tokens": int(enc.encoder.output_lengths(
            torch.tensor(stream.num_samples))), "pred": int(logits.argmax(-1)), "label": stream.label,
    }))


def measure(args: argparse.Namespace, mode: str, minutes: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--mode", mode, "--minutes", str(minutes)]
    if args.ckpt:
        cmd += ["--ckpt", args.ckpt]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:100]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def memory_table(args: argparse.Namespace) -> None:
    rows, ref = [], None
    runs = [("stream", m) for m in args.minutes_list] + [("one pass", m) for m in args.one_pass_minutes]
    for mode, minutes in runs:
        res = measure(args, "stream" if mode == "stream" else "onepass", minutes)
        if "error" in res:
            rows.append([f"{minutes:g}", mode, res["error"], "", "", "", "", ""])
            continue
        if mode == "stream" and ref is None:
            ref = res["peak"]
        rows.append([
            f"{minutes:g}", mode, f"{res['samples'] / 16000 / 60:.1f}", f"{res['tokens']:,}", f"{res['segments']:,}",
            f"{res['peak'] / MIB:,.0f}", f"{(res['peak'] - res['base']) / MIB:,.1f}",
            f"{res['peak'] / ref:.3f}" if ref else "", f"{res['time']:.1f}",
        ])
        print(f"  {mode} {minutes:g} min: {rows[-1]}", file=sys.stderr, flush=True)
    print(table(
        ["minutes asked", "mode", "audio min", "tokens", "segments", "peak RSS MiB", "Δpeak MiB", "peak / first streamed row",
         "time s"], rows,
    ))


def accuracy_table(args: argparse.Namespace) -> None:
    import torch

    from mmctx.data.builtin.spoken_long import make_stream

    torch.set_num_threads(1)
    model = load_model(args.ckpt)
    depths = args.depths
    rows = []
    for minutes, n in zip(args.acc_minutes, args.streams):
        start = time.perf_counter()
        cells, total, right = [], 0, 0
        for depth in depths:
            streams = [make_stream(f"niah-{minutes:g}-{depth:g}-{i}", minutes * 60.0, depth=depth) for i in range(n)]
            with torch.no_grad():
                if minutes <= 2:
                    preds = torch.cat([batch_logits(model, streams[i : i + 8]).argmax(-1) for i in range(0, n, 8)])
                else:
                    preds = torch.cat([stream_logits(model, s).argmax(-1) for s in streams])
            ok = int((preds == torch.tensor([s.label for s in streams])).sum())
            cells.append(f"{ok / n:.2f}")
            total, right = total + n, right + ok
        rows.append([f"{minutes:g}", str(n), *cells, f"**{right / total:.3f}**", f"{time.perf_counter() - start:.0f}"])
        print(f"  {minutes:g} min: {rows[-1]}", file=sys.stderr, flush=True)
    print(table(
        ["minutes", "streams/cell", *[f"depth {d:.0%}" for d in depths], "all", "time s"], rows,
    ))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    parser.add_argument("--minutes", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", default=None, help="a checkpoint of configs/long_context/spoken_memory.yaml")
    parser.add_argument("--minutes-list", type=float, nargs="+", default=[1, 5, 15, 30, 60])
    parser.add_argument("--one-pass-minutes", type=float, nargs="*", default=[1, 5])
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the accuracy table")
    parser.add_argument("--acc-minutes", type=float, nargs="+", default=[0.25, 1, 5, 15, 60])
    parser.add_argument("--streams", type=int, nargs="+", default=[40, 20, 8, 4, 2], help="streams per cell, per length")
    parser.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if len(args.streams) != len(args.acc_minutes):
        parser.error("--streams needs one count per --acc-minutes entry")
    began = time.perf_counter()
    weights = f"checkpoint {args.ckpt}" if args.ckpt else "random weights (memory does not depend on them)"
    print(f"# spoken long context, streamed in {PIECE_SECONDS:g} s pieces; {weights}\n")
    if not args.no_memory:
        print("## inference peak memory\n")
        memory_table(args)
    if not args.no_accuracy:
        if not args.ckpt:
            print("\n(no --ckpt: accuracy skipped)")
        else:
            print("\n## accuracy by stream length x key-word depth (streamed; chance 0.25)\n")
            accuracy_table(args)
    print(f"\ntotal benchmark time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
