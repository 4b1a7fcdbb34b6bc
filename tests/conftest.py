"""Session-wide fixtures: a small default data set generated once (seeded, read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmctx.data.default_data import generate_default_dataset

#: Sizes of the session's small default data set (seed 0).
SMALL = {"num_train": 40, "num_val": 10, "num_test": 10, "seed": 0}


@pytest.fixture(scope="session")
def default_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small default data set (40/10/10, seed 0), generated once per session. Read-only."""
    return generate_default_dataset(tmp_path_factory.mktemp("default") / "data", **SMALL)
