"""Build a small real text-classification set: which standard-library package a docstring is from.

The texts are the first paragraphs of the docstrings of the public functions, classes and
methods of a few packages of Python's own standard library (real English prose written by
people, present on every machine): by default ``email`` (mail messages), ``asyncio``
(concurrency), ``unittest`` (testing) and ``xml`` (XML parsing)::

    python scripts/real_data/build_docstrings.py --out runs/real_data/docstrings

writes ``OUT/{train,val,test}.jsonl`` (``{"id", "text", "label"}``) and ``OUT/classes.json``,
drawn with a fixed seed. Defaults: 20 training, 10 validation and 40 test texts per class.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import numpy as np


def docstrings(package: str) -> list[str]:
    """The distinct first paragraphs (20-400 characters, whitespace collapsed) of the
    docstrings defined in ``package`` and its submodules."""
    root = importlib.import_module(package)
    modules = [root]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if ".test" in info.name or "._" in info.name:
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except Exception:  # platform-specific modules (e.g. asyncio.windows_events)
            continue
    seen: dict[str, None] = {}
    for module in modules:
        for _, obj in inspect.getmembers(module):
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            members = [obj] + ([m for _, m in inspect.getmembers(obj) if inspect.isfunction(m)] if inspect.isclass(obj) else [])
            for member in members:
                doc = inspect.getdoc(member) or ""
                text = " ".join(doc.split("\n\n")[0].split())
                if 20 <= len(text) <= 400:
                    seen.setdefault(text, None)
    return list(seen)


def build(out: Path, packages: list[str], num_train: int, num_val: int, num_test: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    rows: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    out.mkdir(parents=True, exist_ok=True)
    for package in packages:
        texts = docstrings(package)
        need = num_train + num_val + num_test
        if len(texts) < need:
            raise SystemExit(f"{package}: only {len(texts)} docstrings, asked for {need}")
        order = rng.permutation(len(texts))
        start = 0
        for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
            for i in order[start:start + count]:
                rows[split].append({"id": f"{package}-{i}", "text": texts[i], "label": package})
            start += count
    for split, split_rows in rows.items():
        order = rng.permutation(len(split_rows))
        (out / f"{split}.jsonl").write_text("".join(json.dumps(split_rows[i]) + "\n" for i in order))
    (out / "classes.json").write_text(json.dumps(packages))
    return {split: len(split_rows) for split, split_rows in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/real_data/docstrings"))
    parser.add_argument("--packages", nargs="+", default=["email", "asyncio", "unittest", "xml"])
    parser.add_argument("--num-train", type=int, default=20)
    parser.add_argument("--num-val", type=int, default=10)
    parser.add_argument("--num-test", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = build(args.out, args.packages, args.num_train, args.num_val, args.num_test, args.seed)
    print(f"wrote {args.out}: " + ", ".join(f"{n} {split}" for split, n in counts.items()))


if __name__ == "__main__":
    main()
