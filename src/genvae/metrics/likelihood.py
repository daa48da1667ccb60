"""Likelihood metrics: the single-sample ELBO over a data set and the importance-weighted NLL.

All numbers are in nats per example (summed over pixels, averaged over examples).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import positive_int
from ..data import AnyData, BatchLoader, StreamingLoader
from ..data.dataset import as_dataset
from ..data.loader import make_loader
from ..engines.hardware import native_bf16
from ..objectives import ELBO
from ..protocols import LatentVariableModel

__all__ = [
    "IW_COMPILE_SAMPLES",
    "ELBOSummary",
    "IWSummary",
    "evaluate_elbo",
    "evaluate_iw_nll",
    "eval_batches",
    "evaluating",
    "iw_nll",
]


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


#: Importance samples in all (examples × k) from which
#: [`evaluate_iw_nll`][genvae.metrics.likelihood.evaluate_iw_nll] compiles its pass on a CPU by
#: default: about where the time ``torch.compile`` saves exceeds the time it takes
#: (``benchmarks/iw_eval.py``).
IW_COMPILE_SAMPLES = 2**22


@dataclass(frozen=True)
class IWSummary:
    """The importance-weighted NLL of a data set, in nats per example (what
    [`evaluate_iw_nll`][genvae.metrics.likelihood.evaluate_iw_nll] returns).

    ``float(summary)`` is ``summary.nll``, so a summary serves wherever a number is expected (as a
    ``fit`` metric, for one).

    Attributes:
        nll: the mean over examples of the per-example estimate
            [`iw_nll`][genvae.metrics.likelihood.iw_nll].
        stderr: its standard error, std / √N with the sample standard deviation (N − 1) of the
            per-example estimates; it holds the spread of the data and the Monte-Carlo noise of the
            k draws, not the bias of the bound (which shrinks as k grows). NaN for one example.
        k: importance samples per example.
        num_examples: N, the examples averaged.
    """

    nll: float
    stderr: float
    k: int
    num_examples: int

    def __float__(self) -> float:
        return self.nll

    def __str__(self) -> str:
        return f"IW-NLL (K={self.k}) {self.nll:.2f} ± {self.stderr:.2f} nats ({self.num_examples} examples)"


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


def _log_weights(model: LatentVariableModel, x: Tensor, y: Tensor | None, m: int) -> Tensor:
    """One pass: the log importance weights ``(m, b)`` of ``m`` draws for each example of ``x (b, ...)``."""
    return model.terms(x, y, k=m).log_weights()


@functools.cache
def _compiled_log_weights() -> Callable[[LatentVariableModel, Tensor, Tensor | None, int], Tensor]:
    """`_log_weights` through ``torch.compile``, built on first use: the decoder's products, the
    likelihood and the weights as one program, its sizes symbolic, so that every batch size and
    sample count reuses one compilation."""
    return torch.compile(_log_weights, dynamic=True)


@contextmanager
def _value_checks_off(model: LatentVariableModel) -> Iterator[None]:
    """The model's ``validate_args(False)`` where it has one (its input was checked once already)."""
    switch = getattr(model, "validate_args", None)
    with switch(False) if switch is not None else nullcontext():
        yield


def _even(total: int, most: int) -> int:
    """The part size that splits ``total`` into as few parts of at most ``most`` as possible, all
    of one size but the last, which is at most that size and as close to it as can be."""
    parts = -(-total // most)
    return -(-total // parts)


def _iw_log_px(
    model: LatentVariableModel, x: Tensor, k: int, y: Tensor | None, chunk: int | None, compile: bool, bf16: bool
) -> Tensor:
    """log 1/k Σ_i w_i per example of ``x (B, ...)``: ``(B,)`` float64. See `iw_nll`."""
    from ..models import IW_CHUNK_ELEMENTS

    positive_int("k", k)
    if chunk is not None:
        positive_int("chunk", chunk)
    y = y if model.num_classes is not None else None
    values = max(1, x[:1].numel())
    m = min(k, chunk or max(1, IW_CHUNK_ELEMENTS // values))  # samples per pass
    b = _even(x.shape[0], max(1, IW_CHUNK_ELEMENTS // (m * values)))  # examples per pass
    # The checked pass is eager; with compile it takes one draw, and the rest are split evenly (a
    # compiled program specialises to a size of 1, so a pass of one draw or one example runs eagerly).
    first = 1 if compile else m
    step = _even(k - first, m) if compile and k > first else m
    compiled = _compiled_log_weights() if compile else _log_weights
    parts = []
    with torch.inference_mode(), torch.autocast(x.device.type, torch.bfloat16) if bf16 else nullcontext():
        for i in range(0, x.shape[0], b):
            xb, yb = x[i : i + b], None if y is None else y[i : i + b]
            log_w = _log_weights(model, xb, yb, first)  # (first, b), with the model's value checks
            running = torch.logsumexp(log_w.double(), 0)  # (b,)
            with _value_checks_off(model):
                for done in range(first, k, step):
                    r = min(step, k - done)
                    passes = compiled if r > 1 and xb.shape[0] > 1 else _log_weights
                    log_w = passes(model, xb, yb, r)  # (r, b)
                    running = torch.logaddexp(running, torch.logsumexp(log_w.double(), 0))
            parts.append(running)
    return torch.cat(parts) - math.log(k)  # (B,)


def iw_nll(
    model: LatentVariableModel,
    x: Tensor,
    k: int,
    *,
    y: Tensor | None = None,
    chunk: int | None = None,
    compile: bool = False,
    bf16: bool = False,
) -> Tensor:
    """Importance-weighted estimate of −log p(x) with ``k`` samples, per example.

    −log 1/k Σ_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x): an upper bound on the NLL in expectation
    that tightens as k grows (Burda et al., 2015, https://arxiv.org/abs/1509.00519). Any
    [`LatentVariableModel`][genvae.protocols.LatentVariableModel] serves: the weights are its
    [`Terms.log_weights`][genvae.terms.Terms.log_weights], summed over all its latent layers.

    The draws are taken in passes of ``b`` examples times ``m`` draws that hold up to
    [`IW_CHUNK_ELEMENTS`][genvae.models.IW_CHUNK_ELEMENTS] decoder outputs: sizes taken from the
    data's shape, draws before examples, so that each decoder layer is one large matrix product and
    the encoder runs once per ``m`` draws. The first pass over each group of examples runs with the
    model's value checks, the others without them. The passes' ``(m, b)`` log-weights are combined
    with a running log-sum-exp in float64, so memory does not grow with k.

    Args:
        x: ``(B, *data_shape)``.
        k: number of importance samples (e.g. 5000).
        y: labels ``(B,)`` for a conditional model.
        chunk: at most this many samples per pass (the default sizes passes as above).
        compile: run the passes through ``torch.compile``: the decoder, the likelihood and the
            weights fused into one program, compiled once per architecture (on first use in the
            process) for all batch sizes and sample counts. The checked first pass of each group
            then takes one draw, eagerly. The compiled program draws from its own generator
            (seeded from torch's), so the draws differ from the eager ones; the estimator is the
            same.
        bf16: run the passes under bfloat16 autocast (matrix products in bfloat16). It moves the
            estimate by a small fraction of a nat: use it where the hardware multiplies bfloat16
            natively and check it against float32 on the model at hand.

    Returns:
        ``(B,)`` nats, in ``x``'s dtype.
    """
    return -_iw_log_px(model, x, k, y, chunk, compile, bf16).to(x.dtype)


def evaluate_iw_nll(
    model: LatentVariableModel,
    data: Data,
    k: int,
    *,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
    compile: bool | None = None,
    bf16: bool | None = None,
) -> IWSummary:
    """[`iw_nll`][genvae.metrics.likelihood.iw_nll] over a data set: its mean and standard error.

    Arguments as [`evaluate_elbo`][genvae.metrics.likelihood.evaluate_elbo]; ``progress`` shows a
    tqdm bar over the examples, with the running mean and the time left.

    Args:
        compile: compile the passes (see `iw_nll`). By default on a CPU when the data set's size
            is known and size × k is at least
            ``genvae.metrics.IW_COMPILE_SAMPLES``; should that
            compilation fail (no C++ compiler, say), the evaluation warns and runs eagerly.
        bf16: bfloat16 matrix products (see `iw_nll`). By default where
            [`native_bf16`][genvae.engines.hardware.native_bf16] holds, off elsewhere.

    Returns:
        [`IWSummary`][genvae.metrics.IWSummary]: the mean, its standard error, k and N.
    """
    positive_int("k", k)
    loader = isinstance(data, (BatchLoader, StreamingLoader))
    size = len(data[0]) if isinstance(data, tuple) else None if loader else len(data)  # type: ignore[arg-type]
    device = next(model.parameters()).device  # type: ignore[attr-defined]
    failures: tuple[type[Exception], ...] = ()  # what sends an automatic compilation back to eager
    if compile is None:
        compile = device.type == "cpu" and size is not None and size * k >= IW_COMPILE_SAMPLES
        if compile:
            from torch._dynamo.exc import TorchDynamoException

            failures = (TorchDynamoException,)
    bf16 = native_bf16(device) if bf16 is None else bool(bf16)
    estimates: list[Tensor] = []
    total, n = 0.0, 0
    with tqdm(total=size, desc=f"IW bound, K={k}", unit="ex", disable=not progress, leave=False) as bar:
        if compile:
            bar.set_postfix_str("compiling")  # the first batch waits for torch.compile
        for x, y in eval_batches(model, data, batch_size=batch_size, seed=seed):
            try:
                log_px = _iw_log_px(model, x, k, y, None, compile, bf16)  # (B,)
            except failures as error:  # no working compiler, say: evaluate eagerly instead
                message = f"torch.compile failed ({type(error).__name__}: {error}); evaluating eagerly"
                warnings.warn(message, stacklevel=2)
                compile = False
                log_px = _iw_log_px(model, x, k, y, None, compile, bf16)
            estimates.append(-log_px.cpu())
            total += float(estimates[-1].sum())
            n += x.shape[0]
            bar.update(x.shape[0])
            bar.set_postfix(nll=f"{total / n:.2f}")
    if n == 0:
        raise ValueError("expected data with at least one example, got none")
    nll = torch.cat(estimates)  # (N,) float64
    stderr = float(nll.std() / math.sqrt(n)) if n > 1 else math.nan
    return IWSummary(float(nll.mean()), stderr, k, n)
