"""Session-wide fixtures shared by every test folder.

- ``default_root``: a small default data set generated once (seeded, read-only);
- ``small_data``: the sizes of that set as data-module arguments (``num_train`` ... ``data_seed``);
- ``no_network``: block every socket connection and name lookup (returns the attempts);
- ``one_thread``: run a module's tiny models on one thread (request it with
  ``pytestmark = pytest.mark.usefixtures("one_thread")``);
- ``assert_gradients``: after a float64 backward pass, check that every trainable parameter got
  a real gradient, except the named ones that cannot get one by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

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


#: A gradient counts as real above this fraction of the largest gradient entry of the module.
#: In float64, rounding leaves about 1e-16 of that scale on a parameter that is dead by
#: construction; the smallest real gradients of the tiny test models are above 1e-8 of it.
GRADIENT_FLOOR = 1e-11


def _assert_gradients(module: nn.Module, dead: Mapping[str, str] | None = None) -> None:
    """Check ``module``'s gradients after ``backward()`` of a float64 forward pass.

    Args:
        module: the module, cast to float64 before its forward (``module.double()``), so
            that rounding noise cannot pass for a gradient.
        dead: ``fnmatch`` pattern of parameter names → why those parameters cannot get a
            gradient (e.g. a bias the softmax is invariant to). Each pattern must match a
            parameter, and its parameters' gradients must be zero up to rounding, so the list
            stays exact.

    Every other trainable parameter must have a finite gradient whose largest entry is above
    ``GRADIENT_FLOOR`` × the largest entry over all parameters.
    """
    dead = dict(dead or {})
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    assert params, "the module has no trainable parameter"
    not_double = [n for n, p in params if p.dtype != torch.float64]
    assert not not_double, f"run the gradient check in float64 (module.double()): {not_double}"
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"no gradient at all for {missing}"
    not_finite = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not not_finite, f"non-finite gradient for {not_finite}"
    size = {n: p.grad.abs().max().item() for n, p in params}
    floor = GRADIENT_FLOOR * max(size.values())
    assert floor > 0, "every gradient is zero"
    unused = [pattern for pattern in dead if not any(fnmatchcase(n, pattern) for n in size)]
    assert not unused, f"dead-parameter patterns that match no parameter: {unused}"
    exempt = {n for n in size if any(fnmatchcase(n, pattern) for pattern in dead)}
    alive = sorted(n for n in exempt if size[n] > floor)
    assert not alive, f"listed as dead but get a gradient (update the list): {alive}"
    zero = {n: f"{size[n] / max(size.values()):.1e}" for n in size if n not in exempt and size[n] <= floor}
    assert not zero, f"no real gradient (largest entry / largest over all parameters): {zero}"


@pytest.fixture(scope="session")
def assert_gradients() -> Callable[..., None]:
    """``assert_gradients(module, dead={pattern: why})``: see :func:`_assert_gradients`."""
    return _assert_gradients


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Block every socket connection and name lookup; returns the list of attempts."""
    attempts: list[tuple] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, *a: refuse(*a))
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts
