"""Compression for CPU inference on the default data: size on disk, CPU latency per sample
(batch 1 and 32) and test accuracy of the default model (fp32) vs dynamic int8 vs 50 %
magnitude-pruned vs a distilled student (configs/distill.yaml). Prints one table.

    OMP_NUM_THREADS=1 python benchmarks/compression.py                # trains a teacher briefly
    python benchmarks/compression.py --teacher runs/default/version_0/checkpoints/best.ckpt

The teacher is configs/default.yaml (trained here for --epochs epochs unless --teacher is
given), on --train-fraction of the training split; the pruned model is the teacher pruned to 50 % (global L1 over Linear and Conv
weights) and fine-tuned --prune-epochs epochs with the mask fixed; the student is
configs/distill.yaml trained --epochs epochs against the teacher. Size on disk is
``torch.save(state_dict)`` (dense: unstructured zeros do not shrink it). Latency is the
median over repeated forwards of test batches, in eval mode under ``torch.no_grad``, with
--threads intra-op threads.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from mmctx.cli import main
from mmctx.deploy import make_pruning_permanent, model_size_bytes, prune_magnitude, quantize_dynamic_int8, sparsity
from mmctx.data import DefaultDataModule
from mmctx.trainers import ClassificationTask

REPO = Path(__file__).resolve().parents[1]


def fit(config: str, out: Path, epochs: int, extra: list[str]) -> Path:
    main(["fit", f"--config={REPO / config}", f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false",
          f"--trainer.logger.init_args.save_dir={out}", "--trainer.enable_model_summary=false", *extra])
    found = sorted(out.glob("*/version_*/checkpoints/best.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1]


@torch.no_grad()
def accuracy(model: torch.nn.Module, loader) -> float:
    correct = total = 0
    for batch in loader:
        labels = batch.targets["label"]
        correct += int((model(batch).argmax(-1) == labels).sum())
        total += len(labels)
    return correct / total


@torch.no_grad()
def latency_ms(model: torch.nn.Module, batches: list, repeats: int) -> float:
    """Median milliseconds per sample."""
    model(batches[0])  # warm-up
    times = []
    for _ in range(repeats):
        for batch in batches:
            start = time.perf_counter()
            model(batch)
            times.append((time.perf_counter() - start) * 1000 / len(batch))
    return statistics.median(times)


def main_(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", help="checkpoint of configs/default.yaml (default: train one here)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs for the teacher and the student")
    parser.add_argument("--prune-epochs", type=int, default=1, help="fine-tuning epochs after pruning")
    parser.add_argument("--train-fraction", type=float, default=0.2,
                        help="fraction of the 3000 training samples used for every training run (label_fraction)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the timings")
    parser.add_argument("--workdir", help="where runs go (default: a temporary folder)")
    args = parser.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="mmctx-compress-"))
    started = time.time()
    subset = [f"--data.init_args.label_fraction={args.train_fraction}", "--data.init_args.num_workers=0"]
    teacher_ckpt = Path(args.teacher) if args.teacher else fit("configs/default.yaml", work / "teacher", args.epochs, subset)
    student_ckpt = fit("configs/distill.yaml", work / "student", args.epochs,
                       [f"--model.init_args.teacher_checkpoint={teacher_ckpt}", *subset])
    teacher = ClassificationTask.load_from_checkpoint(teacher_ckpt, map_location="cpu").model.eval()
    from mmctx.trainers import DistillationTask

    student = DistillationTask.load_from_checkpoint(student_ckpt, map_location="cpu").model.eval()

    dm = DefaultDataModule(modalities=["image", "text"], batch_size=32, num_workers=0, label_fraction=args.train_fraction)
    dm.setup("fit")
    dm.setup("test")

    pruned = copy.deepcopy(teacher)
    prune_magnitude(pruned, 0.5)
    if args.prune_epochs > 0:  # fine-tune with the mask in place (pruned weights stay zero)
        task = ClassificationTask(pruned, num_classes=dm.num_classes, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
        L.Trainer(max_epochs=args.prune_epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, limit_val_batches=0, default_root_dir=work).fit(task, dm.train_dataloader())
    make_pruning_permanent(pruned)
    pruned.eval()
    int8 = quantize_dynamic_int8(teacher)
    training_s = time.time() - started

    torch.set_num_threads(args.threads)
    test32 = list(dm.test_dataloader())
    test1 = []
    for batch in test32[:2]:  # 16 single-sample batches
        for i in range(8):
            test1.append(type(batch)({m: type(v)(v.data[i:i + 1], v.mask[i:i + 1]) for m, v in batch.inputs.items()},
                                     {k: v[i:i + 1] for k, v in batch.targets.items()}, batch.ids[i:i + 1]))
    rows = []
    for name, model in [("fp32 (default.yaml)", teacher), ("int8 dynamic", int8), ("pruned 50 %", pruned),
                        ("distilled student", student)]:
        rows.append((name, model_size_bytes(model) / 1e6, sum(p.numel() for p in model.parameters()) / 1e6
                     if name != "int8 dynamic" else float("nan"),
                     latency_ms(model, test1, 3), latency_ms(model, test32[:4], 2), accuracy(model, test32)))
    print(f"\ncompression on the default data ({len(dm._dataset('test'))} test samples), "
          f"torch {torch.__version__}, {args.threads} thread(s); training took {training_s / 60:.1f} min")
    print(f"pruned: overall Linear/Conv sparsity {sparsity(pruned)['total']:.3f}")
    print("| model | size on disk (MB) | params (M) | CPU ms/sample, batch 1 | CPU ms/sample, batch 32 | test acc |")
    print("|---|---|---|---|---|---|")
    for name, size, params, l1, l32, acc in rows:
        print(f"| {name} | {size:.2f} | {params:.2f} | {l1:.1f} | {l32:.2f} | {acc:.3f} |")


if __name__ == "__main__":
    main_()
