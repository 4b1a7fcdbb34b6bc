"""Session-wide fixtures shared by every test folder.

- ``default_root``: a small default data set generated once (seeded, read-only);
- ``small_data``: the sizes of that set as data-module arguments (``num_train`` ... ``data_seed``);
- ``one_thread``: run a module's tiny models on one thread (request it with
  ``pytestmark = pytest.mark.usefixtures("one_thread")``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmctx.data.builtin.scenes import generate_default_dataset

#: Sizes of the session's small default data set (seed 0).
SMALL = {"num_train": 40, "num_val": 10, "num_test": 10, "seed": 0}


@pytest.fixture(scope="session")
def default_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small default data set (40/10/10, seed 0), generated once per session. Read-only."""
    return generate_default_dataset(tmp_path_factory.mktemp("default") / "data", **SMALL)


@pytest.fixture(scope="session")
def small_sizes() -> dict[str, int]:
    """``generate_default_dataset`` arguments of ``default_root`` (a fresh copy per request)."""
    return dict(SMALL)


@pytest.fixture(scope="session")
def small_data() -> dict[str, int]:
    """Data-module arguments that match ``default_root``: ``num_train/num_val/num_test/data_seed``."""
    return {"num_train": SMALL["num_train"], "num_val": SMALL["num_val"], "num_test": SMALL["num_test"],
            "data_seed": SMALL["seed"]}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: a second thread costs more in hand-offs than it saves, and on a busy
    2-core machine (parallel jobs) it turns into waiting; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
