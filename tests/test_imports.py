"""The library layers must be importable without Lightning (plain PyTorch projects)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["mmctx.fusion", "mmctx.encoders", "mmctx.layers", "mmctx.heads", "mmctx.models", "mmctx.context", "mmctx.metrics", "mmctx.deploy", "mmctx.types"],
)
def test_library_packages_do_not_import_lightning(module):
    code = (
        f"import sys, {module}; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_import_line_works():
    from mmctx.fusion import ConcatFusion, CrossAttentionFusion  # noqa: F401
