"""benchmarks/gpu_suite.py on a machine without CUDA: a clear message and a clean exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.py"


def _run(*extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # hide any GPU: the no-CUDA path
    return subprocess.run([sys.executable, str(SCRIPT), *extra], capture_output=True, text=True, env=env, timeout=120)


def test_no_cuda_exits_cleanly_with_a_message():
    res = _run("--quick")
    assert res.returncode == 0, res.stderr
    assert "no CUDA GPU here" in res.stdout and "nothing measured" in res.stdout
    assert "Traceback" not in res.stderr


def test_no_cuda_require_gpu_is_an_error_status():
    res = _run("--require-gpu")
    assert res.returncode == 2, res.stderr
    assert "no CUDA GPU here" in res.stdout
