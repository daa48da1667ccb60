"""Shared fixtures: a small synthetic labelled image set (bars at class-dependent positions); tests
marked ``mnist`` skip, with the reason, where MNIST is neither on disk nor fetchable."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterator
from typing import NamedTuple

import pytest
import torch

from genvae import ELBO, IWAE, STL, DReG, FreeBits

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One process per core runs the tests: one thread each, in this process and in its subprocesses.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
from genvae.schedules import Cyclical, LinearWarmup

#: One of each objective, with β schedules that move within a short test run: every engine must
#: train each of them as the eager step does.
OBJECTIVES = {
    "elbo-warmup": lambda: ELBO(LinearWarmup(0.5, steps=3)),
    "iwae": lambda: IWAE(3),
    "dreg": lambda: DReG(3),
    "stl": lambda: STL(),
    "free-bits-cyclical": lambda: FreeBits(0.1, beta=Cyclical(1.0, period=4)),
}


@functools.cache
def mnist_missing() -> str | None:
    """None where MNIST is on disk (under ``$GENVAE_DATA``, else ``~/.cache/genvae``) or could be
    fetched now, else why not. Asked once per process, and only when an ``mnist`` test runs."""
    from genvae.data import cache_dir, fetch_mnist

    try:
        fetch_mnist()
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"MNIST is not in {cache_dir() / 'MNIST' / 'raw'} and could not be fetched: {reason}"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip an ``mnist`` test before its fixtures are built where the data cannot be had."""
    if item.get_closest_marker("mnist") is not None and (reason := mnist_missing()) is not None:
        pytest.skip(reason)


BARS_SHAPE = (1, 12, 12)
BARS_CLASSES = 10


class LabelledImages(NamedTuple):
    x: torch.Tensor  # (N, 1, 12, 12) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64 in range(10)


def bar_pattern(c: int) -> torch.Tensor:
    """The clean ``(1, 12, 12)`` pattern of class ``c``: a 2-pixel bar, horizontal for c < 5."""
    img = torch.zeros(BARS_SHAPE)
    if c < 5:
        img[0, 2 * c + 1 : 2 * c + 3, 1:11] = 1.0
    else:
        img[0, 1:11, 2 * (c - 5) + 1 : 2 * (c - 5) + 3] = 1.0
    return img


def make_bars(n_per_class: int, seed: int, noise: float = 0.1) -> LabelledImages:
    """``n_per_class`` noisy copies of each of the 10 bar patterns, pixels clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.stack([bar_pattern(c) for c in range(BARS_CLASSES)])  # (10, 1, 12, 12)
    y = torch.arange(BARS_CLASSES).repeat_interleave(n_per_class)
    x = 0.05 + 0.9 * patterns[y] + noise * torch.randn(len(y), *BARS_SHAPE, generator=g)
    x = x.clamp(0.0, 1.0)
    perm = torch.randperm(len(y), generator=g)
    return LabelledImages(x[perm].contiguous(), y[perm].contiguous())


@pytest.fixture(scope="session")
def bars_train() -> LabelledImages:
    return make_bars(60, seed=0)


@pytest.fixture(scope="session")
def bars_test() -> LabelledImages:
    return make_bars(20, seed=1)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run on one intra-op thread: the tensors here are tiny, and on a shared 2-core machine two
    threads per process oversubscribe the cores and slow small ops by an order of magnitude."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def light_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compile without generating code: ``torch.compile`` on the ``aot_eager`` backend (dynamo and
    AOT autograd trace the step as usual, autograd hooks included) and the whole CPU step's traced
    program run as traced. The engine × objective tests use it; one test per engine keeps inductor,
    whose code generation does not depend on the objective."""
    import torch._inductor

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn=None, *, mode=None, **kw: compile_(fn, backend="aot_eager", **kw))
    monkeypatch.setattr(torch._inductor, "compile", lambda graph, inputs, options=None: graph)


class PoisonedAdam(torch.optim.Adam):
    """Adam that writes NaN into the first parameter after its ``at``-th step (the loss of that step
    was finite): what a diverging update does."""

    def __init__(self, params, at: int) -> None:
        params = list(params)
        super().__init__(params, lr=1e-3)
        self.first, self.calls, self.at = params[0], 0, at

    def step(self, closure=None):  # type: ignore[override]
        self.calls += 1
        out = super().step(closure)
        if self.calls == self.at:
            with torch.no_grad():
                self.first.fill_(float("nan"))
        return out
