"""Likelihood metrics: the single-sample ELBO over a data set and the importance-weighted NLL.

All numbers are in nats per example (summed over pixels, averaged over examples).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import positive_int
from ..data import AnyData, BatchLoader, StreamingLoader
from ..data.dataset import as_dataset
from ..data.loader import make_loader
from ..objectives import ELBO
from ..protocols import LatentVariableModel

__all__ = ["ELBOSummary", "evaluate_elbo", "evaluate_iw_nll", "eval_batches", "evaluating", "iw_nll"]


@dataclass(frozen=True)
class ELBOSummary:
    """Data-set means, in nats per example, of the single-sample ELBO terms.

    Attributes:
        loss: −ELBO.
        kl: KL(q(z|x) ‖ p(z)).
        log_likelihood: E_q[log p(x|z)] (one draw).
        num_examples: how many examples were averaged.
    """

    loss: float
    kl: float
    log_likelihood: float
    num_examples: int


Data = AnyData | BatchLoader | StreamingLoader
"""What the data-set metrics accept: any data ``fit`` takes (a data set, a tensor, an ``(x, y)``
pair, a map-style ``Dataset``), or a loader."""


def _batches(data: Data, batch_size: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield ``(x, y)`` batches of ``data``, in order."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor) and data[0].is_floating_point():
        x, y = data  # float tensors as they are: any values stay for the model to judge
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size], None if y is None else y[i : i + batch_size]
        return
    if not isinstance(data, (BatchLoader, StreamingLoader)):
        data = make_loader(as_dataset(data, "data"), batch_size, shuffle=False, generator=torch.Generator())
    yield from data


@contextmanager
def evaluating(model: LatentVariableModel, *, seed: int | None = None) -> Iterator[None]:
    """Within the block: the model in eval mode, gradients off and the global random state forked
    (seeded from ``seed`` unless None); all restored on exit, so that an evaluation neither
    disturbs training nor depends on it."""
    device = next(model.parameters()).device  # type: ignore[attr-defined]
    was_training = model.training  # type: ignore[attr-defined]
    devices = [device.index or 0] if device.type == "cuda" else []
    model.eval()  # type: ignore[attr-defined]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        model.train(was_training)  # type: ignore[attr-defined]


def eval_batches(
    model: LatentVariableModel, data: Data, *, batch_size: int, seed: int | None = 0
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """The one evaluation loop: ``(x, y)`` batches on the model's device, ``x`` in its dtype, in order,
    inside [`evaluating`][genvae.metrics.likelihood.evaluating] (so two evaluations with the same
    ``seed`` agree exactly). ``y`` is None for an unconditional model.
    """
    positive_int("batch_size", batch_size)
    weight = next(model.parameters())  # type: ignore[attr-defined]
    with evaluating(model, seed=seed):
        for x, y in _batches(data, batch_size):
            labels = None if y is None or model.num_classes is None else y.to(weight.device)
            yield x.to(weight.device, weight.dtype), labels


def evaluate_elbo(model: LatentVariableModel, data: Data, *, batch_size: int = 1000, seed: int = 0) -> ELBOSummary:
    """Mean single-sample ELBO terms of ``model`` over ``data``.

    Args:
        model: a VAE or CVAE.
        data: an ``ImageDataset``, a loader, an ``(x, y)`` pair of tensors ``(N, *data_shape)``,
            ``(N,)`` (``y`` may be None for a VAE), a tensor ``x``, or a map-style ``Dataset``.
        batch_size: examples per forward pass.
        seed: the posterior draws come from this seed (the global RNG is left as it was), so that
            two evaluations of the same model agree exactly.
    """
    sums, n = None, 0
    objective = ELBO()
    for x, y in eval_batches(model, data, batch_size=batch_size, seed=seed):
        terms = model.terms(x, y)
        bound, kl = objective(terms).bound, terms.kl().mean(0)  # (B,) each
        batch = torch.stack([-bound.sum(), kl.sum(), terms.log_likelihood.mean(0).sum()]).double()
        sums = batch if sums is None else sums + batch
        n += x.shape[0]
    loss, kl_mean, ll = (sums / max(n, 1)).tolist() if sums is not None else (0.0, 0.0, 0.0)
    return ELBOSummary(loss, kl_mean, ll, n)


@torch.no_grad()
def iw_nll(
    model: LatentVariableModel, x: Tensor, k: int, *, y: Tensor | None = None, chunk: int | None = None
) -> Tensor:
    """Importance-weighted estimate of −log p(x) with ``k`` samples, per example.

    −log 1/k Σ_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x): an upper bound on the NLL in expectation
    that tightens as k grows (Burda et al., 2015). The k draws are taken in chunks of the model's
    `terms` and combined with a running log-sum-exp in float64, so memory does not grow with k.

    Args:
        x: ``(B, *data_shape)``.
        k: number of importance samples (e.g. 5000).
        y: labels ``(B,)`` for a conditional model.
        chunk: samples per pass; by default as many as fit in
            [`genvae.models.IW_CHUNK_ELEMENTS`][genvae.models.IW_CHUNK_ELEMENTS] decoder outputs.

    Returns:
        ``(B,)`` nats.
    """
    from ..models import IW_CHUNK_ELEMENTS

    positive_int("k", k)
    if chunk is None:
        chunk = max(1, IW_CHUNK_ELEMENTS // max(1, x.numel()))
    y = y if model.num_classes is not None else None
    running = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
    done = 0
    while done < k:
        m = min(positive_int("chunk", chunk), k - done)
        log_w = model.terms(x, y, k=m).log_weights()  # (m, B)
        running = torch.logaddexp(running, torch.logsumexp(log_w.double(), 0))
        done += m
    return -(running - math.log(k)).to(x.dtype)


def evaluate_iw_nll(
    model: LatentVariableModel, data: Data, k: int, *, batch_size: int = 100, seed: int = 0, progress: bool = False
) -> float:
    """Mean of [`iw_nll`][genvae.metrics.likelihood.iw_nll] over a data set (nats per example).

    Arguments as [`evaluate_elbo`][genvae.metrics.likelihood.evaluate_elbo]; ``progress`` shows a
    tqdm bar over the examples, with the running mean and the time left.
    """
    total, n = 0.0, 0
    loader = isinstance(data, (BatchLoader, StreamingLoader))
    size = len(data[0]) if isinstance(data, tuple) else None if loader else len(data)  # type: ignore[arg-type]
    with tqdm(total=size, desc=f"IW bound, K={k}", unit="ex", disable=not progress, leave=False) as bar:
        for x, y in eval_batches(model, data, batch_size=batch_size, seed=seed):
            total += float(iw_nll(model, x, k, y=y).double().sum())
            n += x.shape[0]
            bar.update(x.shape[0])
            bar.set_postfix(nll=f"{total / n:.2f}")
    return total / max(n, 1)
