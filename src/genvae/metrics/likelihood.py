"""Likelihood metrics: the single-sample ELBO over a data set and the importance-weighted NLL.

All numbers are in nats per example (summed over pixels, averaged over examples).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import positive_int
from ..data import BatchLoader, ImageDataset
from ..models import _LatentVariableModel

__all__ = ["ELBOSummary", "evaluate_elbo", "iw_nll", "evaluate_iw_nll"]

#: Upper bound on the elements of the decoder output per IW chunk (k_chunk · B · pixels):
#: 2**25 float32 values is 128 MiB, so k = 5000 on a batch runs in bounded memory.
IW_CHUNK_ELEMENTS = 2**25


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


Data = ImageDataset | BatchLoader | tuple[Tensor, Tensor | None]
"""What the data-set metrics accept: a data set, a loader, or an ``(x, y)`` pair of tensors."""


def _batches(data: Data, batch_size: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield ``(x, y)`` from an ImageDataset / loader / ``(x, y)`` pair, in order."""
    if isinstance(data, ImageDataset):
        data = BatchLoader(data, batch_size, shuffle=False, generator=torch.Generator().manual_seed(0))
    if isinstance(data, tuple):
        x, y = data
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size], None if y is None else y[i : i + batch_size]
        return
    yield from data


def _labels_for(model: _LatentVariableModel, y: Tensor | None) -> Tensor | None:
    return y if model.num_classes is not None else None


@torch.no_grad()
def evaluate_elbo(model: _LatentVariableModel, data: Data, *, batch_size: int = 1000, seed: int = 0) -> ELBOSummary:
    """Mean single-sample ELBO terms of ``model`` over ``data``.

    Args:
        model: a VAE or CVAE.
        data: an ``ImageDataset``, a ``BatchLoader``, or an ``(x, y)`` pair of tensors
            ``(N, *data_shape)``, ``(N,)`` (``y`` may be None for a VAE).
        batch_size: examples per forward pass.
        seed: the posterior draws come from this seed (the global RNG is left as it was), so that
            two evaluations of the same model agree exactly.
    """
    positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    n = 0
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for x, y in _batches(data, batch_size):
            x = x.to(device)
            y = None if y is None else y.to(device)
            out = model.elbo(x, _labels_for(model, y))
            sums += torch.stack([-out.elbo.sum(), out.kl.sum(), out.log_likelihood.sum()]).double()
            n += x.shape[0]
    model.train(was_training)
    loss, kl, ll = (sums / max(n, 1)).tolist()
    return ELBOSummary(loss, kl, ll, n)


@torch.no_grad()
def iw_nll(
    model: _LatentVariableModel, x: Tensor, k: int, *, y: Tensor | None = None, chunk: int | None = None
) -> Tensor:
    """Importance-weighted estimate of −log p(x) with ``k`` samples, per example.

    −log 1/k Σ_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x): an upper bound on the NLL in expectation
    that tightens as k grows (Burda et al., 2015). The k draws are taken in chunks and combined with
    a running log-sum-exp, so memory does not grow with k.

    Args:
        x: ``(B, *data_shape)``.
        k: number of importance samples (e.g. 5000).
        y: labels ``(B,)`` for a conditional model.
        chunk: samples per pass; by default as many as fit in :data:`IW_CHUNK_ELEMENTS`.

    Returns:
        ``(B,)`` nats.
    """
    positive_int("k", k)
    if chunk is None:
        chunk = max(1, IW_CHUNK_ELEMENTS // max(1, x[0].numel() * x.shape[0]))
    running = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
    done = 0
    while done < k:
        m = min(positive_int("chunk", chunk), k - done)
        log_px, log_qz, log_pz = model.log_weights(x, _labels_for(model, y), k=m)
        chunk_lse = torch.logsumexp((log_px + log_pz - log_qz).double(), 0)  # (B,)
        running = torch.logaddexp(running, chunk_lse)
        done += m
    return -(running - math.log(k)).to(x.dtype)


@torch.no_grad()
def evaluate_iw_nll(model: _LatentVariableModel, data: Data, k: int, *, batch_size: int = 100, seed: int = 0) -> float:
    """Mean of :func:`iw_nll` over a data set (nats per example); arguments as :func:`evaluate_elbo`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for x, y in _batches(data, batch_size):
            x = x.to(device)
            y = None if y is None else y.to(device)
            total += float(iw_nll(model, x, k, y=y).double().sum())
            n += x.shape[0]
    model.train(was_training)
    return total / max(n, 1)
