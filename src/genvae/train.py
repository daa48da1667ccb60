"""Training: ``fit`` runs Adam (or any optimizer) on an objective (the negative ELBO by default),
with checkpoints that resume bit-identically, a NaN guard, ``torch.compile``/autocast/CUDA graphs
chosen per run ([`genvae.engine`][genvae.engine]), and
DistributedDataParallel when started under ``torchrun``. Every engine wraps the one step of
[`genvae.step`][genvae.step].

The hot loop does one gather per batch from a device-resident data set, one fused forward/backward
and one optimizer step; the loss is accumulated on the device and read back to the host only once
every ``log_every`` steps.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import sys
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import runfolder
from ._checks import error_line, positive_float, positive_int
from ._files import write_json
from ._graph import GraphedStep
from ._step import CompiledAdamStep
from .data import AnyData, ImageDataset
from .data.dataset import as_dataset
from .data.loader import BatchLoader, StreamingLoader, head, make_loader
from .engine import Engine, choose_engine
from .io import MODEL_FILE, describe, save
from .metrics.likelihood import evaluate_elbo, evaluating
from .objectives import ELBO, Objective
from .protocols import LatentVariableModel
from .schedules import LinearWarmup, as_schedule
from .step import objective_loss, train_step

__all__ = ["EpochStats", "FitResult", "fit", "resolve_device"]

log = logging.getLogger("genvae.train")

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"  # the settings genvae train passes as fit(config=...)
FIT_FILE = "fit.json"  # the data and the training call, so that the run folder describes itself
HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class EpochStats:
    """One epoch of training, in nats per image (−ELBO summed over pixels, averaged over images).

    ``train_loss`` is the running mean of the training objective's loss over the epoch; the
    ``test_*`` fields are the single-sample ELBO terms on the test set after the epoch (None
    without a test set); ``metrics`` holds the values of ``fit(metrics=…)`` after the epoch.
    """

    epoch: int
    train_loss: float
    test_loss: float | None
    test_kl: float | None
    test_log_likelihood: float | None
    seconds: float
    images_per_second: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FitResult:
    """What [`fit`][genvae.train.fit] returns: the per-epoch history, the run folder (if any) and the
    engine that ran the steps (``compile``, ``amp`` and ``cuda_graph`` as resolved)."""

    history: list[EpochStats]
    out: Path | None
    engine: Engine


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; an unavailable CUDA device, or a device of a kind
    genvae does not train on (``meta``, ``xla``…), is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise ValueError(f"expected device 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"expected device {device!r} to exist, but torch.cuda.is_available() is False")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"expected device {device!r} to exist, found {torch.cuda.device_count()} CUDA devices")
    return dev


def _distributed() -> tuple[int, int, bool]:
    """(rank, world size, whether this call created the process group) under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    created = False
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if torch.cuda.is_available() and os.environ.get("GENVAE_BACKEND") != "gloo" else "gloo"
        )
        created = True
    return dist.get_rank(), dist.get_world_size(), created


def _rng_state(device: torch.device, loader: BatchLoader | StreamingLoader) -> dict[str, object]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "loader": loader.generator.get_state(),
    }


def _set_rng_state(state: dict, device: torch.device, loader: BatchLoader | StreamingLoader) -> None:
    # The checkpoint is loaded onto the training device; generator states are CPU byte tensors.
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    loader.generator.set_state(state["loader"].cpu())


def fit(
    model: LatentVariableModel,
    train: AnyData,
    *,
    epochs: int,
    test: AnyData | None = None,
    objective: Objective | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    beta: float = 1.0,
    kl_warmup_epochs: int = 0,
    grad_clip: float | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    compile: bool | str = "auto",
    amp: bool | str = "auto",
    cuda_graph: bool | str = "auto",
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[EpochStats, nn.Module], None]] = (),
    metrics: Mapping[str, Callable[[LatentVariableModel], float]] | None = None,
    optimizer: Callable[[Iterable[nn.Parameter]], Optimizer] | None = None,
    scheduler: Callable[[Optimizer], torch.optim.lr_scheduler.LRScheduler] | None = None,
    log_every: int = 50,
    progress: bool | None = None,
    in_memory: bool | None = None,
    num_workers: int | None = None,
    config: Mapping[str, object] | None = None,
) -> FitResult:
    """Train ``model`` on ``train`` by minimising ``objective``'s loss (the negative ELBO by default).

    Args:
        model: a [`VAE`][genvae.VAE], [`CVAE`][genvae.CVAE] or any
            [`LatentVariableModel`][genvae.protocols.LatentVariableModel] (labels are passed when the model is
            conditional).
        train: the training data: a genvae [`ImageDataset`][genvae.data.dataset.ImageDataset], a
            tensor ``x (N, *data_shape)``, a pair ``(x, y)``, or a map-style
            ``torch.utils.data.Dataset`` whose items are ``x`` or ``(x, y)`` (tensors, arrays or PIL
            images). uint8 data are 8-bit pixels (the model sees pixel / 255); floating data are
            fed as they are, in the model's dtype; labels are needed only by conditional models.
            Data that fit in memory are moved to ``device`` once, whole, and batched by one gather
            each; a larger data set is streamed through a ``DataLoader`` (see ``in_memory``).
        epochs: total number of epochs (a resumed run continues up to this number).
        test: evaluated after every epoch (single-sample ELBO with a fixed seed); any kind of
            data ``train`` takes.
        objective: the training objective, e.g. [`IWAE`][genvae.objectives.IWAE] ``(k=5)``; by
            default [`ELBO`][genvae.objectives.ELBO] with ``beta`` and ``kl_warmup_epochs``. Its
            β schedule counts optimizer steps from 1, across epochs and resumes.
        batch_size: images per step.
        lr: learning rate of the default optimizer, Adam (fused where the device supports it).
        beta: KL weight (β-VAE) of the default objective.
        kl_warmup_epochs: the default objective's β rises linearly from 0 to ``beta`` over this
            many epochs, step by step (a [`LinearWarmup`][genvae.schedules.LinearWarmup]).
        grad_clip: clip the global gradient norm to this value.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: seeds the parameters' noise draws and the batch order.
        compile: ``torch.compile`` the step; a string picks its mode, e.g. ``"max-autotune"``;
            ``"auto"`` (the default) decides from the device, the model and the planned number of
            steps (see [`genvae.engine`][genvae.engine]; ``FitResult.engine`` says what ran). On a
            CPU with the default Adam, in one process, the whole step is compiled as one program:
            gradients by `torch.func.grad_and_value` and torch.optim.Adam's update, on the
            optimizer's own state (so checkpoints are unchanged), traced once and compiled by
            inductor without dynamo's per-call guards; the learning rate, betas, ε and weight
            decay are read at every step, and the last, smaller batch of an epoch takes the eager
            step. Elsewhere, and for models with convolutions or with parameters shared between
            parts (a VampPrior reuses the encoder), the loss is compiled and autograd and the
            optimizer run as usual.
        amp: bfloat16 autocast for the forward pass (on a CPU it pays with ``compile``, which
            fuses the casts into the neighbouring kernels); ``"auto"`` (the default) turns it on
            with compile where the device has bfloat16 matrix units.
        cuda_graph: on a CUDA device, capture the whole step (loss, backward, optimizer step) as
            one CUDA graph after three warm-up steps and replay it for every full batch; the
            last, smaller batch of an epoch runs eagerly. This removes the kernel-launch cost
            that bounds small models on a GPU. It needs one process, and an optimizer built with
            ``capturable=True`` (the default Adam is); combine with ``compile=True`` to fuse the
            elementwise kernels as well. ``"auto"`` (the default) turns it on on a CUDA device
            with the default optimizer.
        out: run folder; after every epoch it receives ``checkpoint.pt`` (weights, optimizer,
            scheduler and RNG states, history), ``model.safetensors`` and ``history.json`` as one
            set committed by ``manifest.json`` (see [`genvae.runfolder`][genvae.runfolder]). The
            folder is locked while ``fit`` runs. Nothing in it is written or removed (leftovers of
            a killed write, ``fit.json``) until every check has passed and, with ``resume``, the
            checkpoint has been read into the model and optimizer: a call that fails leaves the
            folder as it was.
        resume: continue from the verified set in ``out`` (from scratch if it has none yet); the
            weights then match an uninterrupted run bit for bit on the CPU.
        callbacks: called as ``callback(stats, model)`` after every epoch (rank 0 only).
        metrics: ``{name: fn}``; after every epoch ``fn(model)`` (in eval mode, rank 0 only) gives a
            number recorded in ``EpochStats.metrics`` and ``history.json``, e.g.
            ``{"iw_nll": lambda m: evaluate_iw_nll(m, test, k=100).nll}``.
        optimizer: factory ``params -> Optimizer`` replacing Adam.
        scheduler: factory ``optimizer -> LRScheduler``, stepped once per epoch; a scheduler whose
            ``step`` takes a metric (``ReduceLROnPlateau``) gets the epoch's test loss, or its
            train loss without a test set.
        log_every: steps between host reads of the running loss (progress bar and NaN check).
        progress: show a tqdm bar; default: when stderr is a terminal.
        in_memory: for a map-style data set: hold it in memory (True) or stream it (False); by
            default it is held when its examples take at most
            [`IN_MEMORY_BYTES`][genvae.data.dataset.IN_MEMORY_BYTES].
        num_workers: worker processes of a streamed data set's ``DataLoader`` (default
            [`default_workers`][genvae.data.loader.default_workers]).
        config: JSON-ready settings written to ``out`` as ``config.json`` beside ``fit.json``, once
            the checks have passed (``genvae train`` records its settings so).

    Raises:
        FloatingPointError: the loss, the test loss or the weights became NaN or inf; nothing
            non-finite is written, and the last checkpoint is left as it was.
        FileExistsError: ``out`` already holds a checkpoint and ``resume`` is False.
        RunFolderLocked: another process is training in ``out``.
        RunFolderWriteError: a checkpoint could not be written (a full disk); the last committed
            epoch is intact.
        TypeError: with ``out``, a model that [`genvae.save`][genvae.io.save] cannot describe.
        ValueError: a checkpoint that is damaged or does not fit the model (on resume), or a run
            folder that has been edited (see [`genvae.runfolder`][genvae.runfolder]).
    """
    train = as_dataset(train, "train", in_memory=in_memory)
    test = as_dataset(test, "test", in_memory=in_memory) if test is not None else None
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    positive_int("log_every", log_every)
    positive_float("lr", lr)
    as_schedule(beta)
    if isinstance(kl_warmup_epochs, bool) or not (isinstance(kl_warmup_epochs, int) and kl_warmup_epochs >= 0):
        raise ValueError(f"expected kl_warmup_epochs to be an int >= 0, got {kl_warmup_epochs!r}")
    if objective is not None and (beta != 1.0 or kl_warmup_epochs):
        raise ValueError(
            f"expected beta and kl_warmup_epochs at their defaults with an objective (give the objective its "
            f"β schedule), got beta={beta!r}, kl_warmup_epochs={kl_warmup_epochs!r} and {objective!r}"
        )
    if objective is not None and not (callable(objective) and hasattr(objective, "k")):
        raise TypeError(f"expected objective to be an Objective (callable, with k), got {type(objective).__name__}")
    for name, fn in (metrics or {}).items():
        if not (isinstance(name, str) and callable(fn)):
            raise TypeError(f"expected metrics as {{name: fn(model) -> float}}, got {name!r}: {fn!r}")
    if grad_clip is not None:
        positive_float("grad_clip", grad_clip)

    rank, world, created_group = _distributed()
    run = Path(out) if out is not None else None
    with ExitStack() as stack:
        if created_group:
            stack.callback(dist.destroy_process_group)
        if run is not None and rank == 0:
            _check_describable(model)
            stack.enter_context(runfolder.lock(run))  # before anything is read from or written to the folder
        return _fit(
            model, train, test, run, rank, world, epochs=epochs, objective=objective, batch_size=batch_size,
            lr=lr, beta=beta, kl_warmup_epochs=kl_warmup_epochs, grad_clip=grad_clip, device=device, seed=seed,
            compile=compile, amp=amp, cuda_graph=cuda_graph, resume=resume, callbacks=callbacks, metrics=metrics,
            optimizer=optimizer, scheduler=scheduler, log_every=log_every, progress=progress,
            num_workers=num_workers, config=config,
        )  # fmt: skip


def _fit(
    model: LatentVariableModel,
    train: ImageDataset | Dataset,
    test: ImageDataset | Dataset | None,
    run: Path | None,
    rank: int,
    world: int,
    *,
    epochs: int,
    objective: Objective | None,
    batch_size: int,
    lr: float,
    beta: float,
    kl_warmup_epochs: int,
    grad_clip: float | None,
    device: str | torch.device,
    seed: int,
    compile: bool | str,
    amp: bool | str,
    cuda_graph: bool | str,
    resume: bool,
    callbacks: Sequence[Callable[[EpochStats, nn.Module], None]],
    metrics: Mapping[str, Callable[[LatentVariableModel], float]] | None,
    optimizer: Callable[[Iterable[nn.Parameter]], Optimizer] | None,
    scheduler: Callable[[Optimizer], torch.optim.lr_scheduler.LRScheduler] | None,
    log_every: int,
    progress: bool | None,
    num_workers: int | None,
    config: Mapping[str, object] | None,
) -> FitResult:
    """The body of [`fit`][genvae.train.fit], with its arguments checked and the run folder locked."""
    dev = resolve_device(device)
    if cuda_graph is True and (dev.type != "cuda" or world > 1):
        raise ValueError(
            f"expected cuda_graph=True on a single CUDA device, got device {str(dev)!r} and {world} processes"
        )
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(dev)
    committed = runfolder.complete_epoch(run) if run is not None else None
    if run is not None and committed is None and os.path.lexists(run / CHECKPOINT_FILE):
        raise ValueError(
            f"expected a manifest.json beside {str(run / CHECKPOINT_FILE)!r} (genvae 0.2 run folders have one), "
            "found none, so the checkpoint cannot be verified; train into a new folder"
        )
    if committed is not None and not resume:
        raise FileExistsError(
            f"expected an empty run folder, but {str(run)!r} holds a checkpoint of epoch {committed}; pass "
            "resume=True to continue that run or choose another out"
        )

    torch.manual_seed(seed + rank)
    model.to(dev)
    dtype = next(model.parameters()).dtype
    params = [p for p in model.parameters() if p.requires_grad]
    loader = make_loader(
        train,
        batch_size,
        shuffle=True,
        drop_last=False,
        device=dev,
        rank=rank,
        world_size=world,
        generator=torch.Generator().manual_seed(seed),
        dtype=dtype,
        num_workers=num_workers,
    )
    steps_per_epoch = len(loader)
    # Decided from the whole run's plan, so that a resumed run keeps the engine it started with.
    engine = choose_engine(
        model, dev, epochs * steps_per_epoch, compile=compile, amp=amp, cuda_graph=cuda_graph,
        default_optimizer=optimizer is None, processes=world,
    )  # fmt: skip
    compile, amp, cuda_graph = engine.compile, engine.amp, engine.cuda_graph
    if engine.channels_last:
        model.to(memory_format=torch.channels_last)  # the weights' layout; values and names unchanged
    if rank == 0:
        log.info("engine: %s (%s)", engine.describe(), engine.reason)
    if optimizer is None:
        # Under a CUDA graph the learning rate is a device tensor, so that a scheduler's updates
        # reach the captured kernels.
        opt: Optimizer = torch.optim.Adam(
            params,
            lr=torch.tensor(lr, device=dev) if cuda_graph else lr,
            fused=dev.type in ("cpu", "cuda"),
            capturable=cuda_graph,
        )
    else:
        opt = optimizer(params)
        if cuda_graph and not opt.defaults.get("capturable", False):
            raise ValueError(
                f"expected an optimizer built with capturable=True for cuda_graph=True, got "
                f"{type(opt).__name__} with capturable={opt.defaults.get('capturable')}"
            )
    sched = scheduler(opt) if scheduler is not None else None
    conditional = model.num_classes is not None
    if objective is None:
        objective = ELBO(LinearWarmup(beta, kl_warmup_epochs * steps_per_epoch) if kl_warmup_epochs else beta)
    count = torch.zeros((), dtype=torch.int64, device=dev)  # optimizer steps taken; drives β schedules

    history: list[EpochStats] = []
    start = 0
    if resume and run is not None and committed is not None:
        state = _read_checkpoint(run, dev)
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if sched is not None and state.get("scheduler") is not None:
                sched.load_state_dict(state["scheduler"])
            history = [EpochStats(**h) for h in state["history"]]
            start = int(state["epoch"])
            count.fill_(int(state.get("step", start * steps_per_epoch)))
            _set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"], dev, loader)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
            raise ValueError(
                f"the checkpoint in {str(run)!r} does not fit this model and optimizer (resume with the settings "
                f"it was trained with): {str(err).strip().splitlines()[0]}"
            ) from None
        log.info("resuming %s at epoch %d", run, start + 1)

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    mode = compile if isinstance(compile, str) else None
    # On a CPU, with the default Adam, the whole step is compiled (see _step.py); elsewhere the loss.
    whole_step = engine.whole_step
    loss_fn = torch.compile(_own_copy(objective_loss), mode=mode) if compile and not whole_step else objective_loss
    show = progress if progress is not None else sys.stderr.isatty()
    running = torch.zeros((), device=dev)  # the epoch's summed loss, read back every log_every steps

    def eager(x: torch.Tensor, y: torch.Tensor | None) -> None:
        train_step(net, objective, opt, (x, y), step=count, running=running, amp=amp, grad_clip=grad_clip, loss=loss_fn)

    step_fn: Callable[[torch.Tensor, torch.Tensor | None], None] = eager
    if cuda_graph:
        step_fn = GraphedStep(eager)
    elif whole_step:
        adam = cast(torch.optim.Adam, opt)  # whole_step implies the default optimizer
        step_fn = CompiledAdamStep(
            eager, model, objective, adam, count, running, amp=amp, grad_clip=grad_clip, mode=mode
        )

    # The data are checked once here, so the per-step value checks (host reads) can be skipped.
    x0, y0 = head(train, 1024, dtype)
    if conditional and y0 is None:
        raise ValueError(f"expected labelled train data for a conditional model, got {type(train).__name__} without")
    # In eval mode with the random state forked, so that the check changes no buffer and no draw.
    with model.validate_args(True), evaluating(model):
        model.terms(x0.to(dev), y0.to(dev) if conditional else None)  # values, labels, the likelihood's event shape
    if run is not None and rank == 0:  # every check has passed: the first writes to the folder
        removed = runfolder.recover(run)
        if removed:
            log.warning("removed leftovers of a killed write in %s: %s", run, ", ".join(removed))
        if config is not None:
            write_json(run / CONFIG_FILE, dict(config))
        write_json(run / FIT_FILE, _describe_fit(train, test, objective, epochs, batch_size, lr, seed, engine))
    with model.validate_args(False):
        for epoch in range(start, epochs):
            model.train()
            running.zero_()
            seen, t0 = 0, time.perf_counter()
            bar = tqdm(
                loader,
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{epochs}",
                disable=not show or rank != 0,
                leave=False,
            )
            for step, (x, y) in enumerate(bar, start=1):
                step_fn(x, y if conditional else None)
                seen += x.shape[0]
                if step % log_every == 0 or step == steps_per_epoch:
                    mean = float(running) / step
                    if not math.isfinite(mean):
                        raise FloatingPointError(
                            f"loss is {mean} at epoch {epoch + 1}, step {step} (checked every {log_every} steps); "
                            + _last_good(run)
                        )
                    bar.set_postfix(loss=f"{mean:.2f}")
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            seconds = time.perf_counter() - t0
            train_loss = float(running) / steps_per_epoch
            if not _finite(model, opt):
                raise FloatingPointError(
                    f"the weights or the optimizer's state became NaN or inf in epoch {epoch + 1} (its losses were "
                    "finite, so in the last step's update); " + _last_good(run)
                )
            summary = evaluate_elbo(model, test, seed=seed) if test is not None and rank == 0 else None
            if summary is not None and not math.isfinite(summary.loss):
                raise FloatingPointError(f"the test loss is {summary.loss} after epoch {epoch + 1}; " + _last_good(run))
            if sched is not None:
                _step_scheduler(sched, summary.loss if summary is not None else train_loss)
            stats = EpochStats(
                epoch=epoch + 1,
                train_loss=train_loss,
                test_loss=summary.loss if summary else None,
                test_kl=summary.kl if summary else None,
                test_log_likelihood=summary.log_likelihood if summary else None,
                seconds=seconds,
                images_per_second=seen * world / seconds,
                metrics=_epoch_metrics(model, metrics) if rank == 0 else {},
            )
            history.append(stats)
            rng = _rng_state(dev, loader)
            if world > 1:
                gathered: list[object] = [None] * world
                dist.all_gather_object(gathered, rng)
                rng = gathered  # type: ignore[assignment]
            if rank == 0:
                log.info("epoch %d: %s", epoch + 1, stats)
                if run is not None:
                    _write_checkpoint(run, model, opt, sched, rng, epoch + 1, int(count), history)
                for callback in callbacks:
                    callback(stats, model)
    return FitResult(history, run, engine)


def _describe_fit(
    train: ImageDataset | Dataset,
    test: ImageDataset | Dataset | None,
    objective: Objective,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    engine: Engine,
) -> dict[str, object]:
    """What ``fit.json`` records: the data (where they came from, when known) and the training call."""

    def data(d: ImageDataset | Dataset | None) -> dict[str, object] | None:
        if d is None:
            return None
        if isinstance(d, ImageDataset):
            return {"source": d.source, "binarize": d.binarize, "size": len(d), "data_shape": list(d.data_shape)}
        return {"source": None, "binarize": "none", "size": len(d), "type": type(d).__name__}  # type: ignore[arg-type]

    return {
        "train": data(train),
        "test": data(test),
        "objective": repr(objective),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "engine": {**asdict(engine), "name": engine.describe()},
    }


def _step_scheduler(sched: torch.optim.lr_scheduler.LRScheduler, loss: float) -> None:
    """Step ``sched`` once; one whose ``step`` takes a metric (``ReduceLROnPlateau``) gets ``loss``."""
    params = inspect.signature(sched.step).parameters
    if "metrics" in params or isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched.step(loss)  # type: ignore[call-arg]
    else:
        sched.step()


def _check_describable(model: nn.Module) -> None:
    """Fail before training when the model could not be saved after its first epoch."""
    try:
        describe(model)
    except TypeError as err:
        raise TypeError(f"fit(out=...) saves the model after every epoch, but it cannot be described: {err}") from None


def _read_checkpoint(run: Path, dev: torch.device) -> dict:
    """The verified checkpoint of ``run``, loaded onto ``dev`` without pickle's code execution."""
    data = runfolder.read_member(run, CHECKPOINT_FILE)
    try:
        state = torch.load(BytesIO(data), map_location=dev, weights_only=True)
    except Exception as err:  # a file that matches its manifest but is not a checkpoint: edited by hand
        raise ValueError(
            f"expected a genvae checkpoint in {str(run / CHECKPOINT_FILE)!r} (tensors and plain values only), "
            f"could not read it: {error_line(err)}"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(
            f"expected a genvae checkpoint in {str(run / CHECKPOINT_FILE)!r}, got a {type(state).__name__}"
        )
    return state


def _last_good(run: Path | None) -> str:
    """Where training can restart from, for an error message: only a complete, verified set counts."""
    epoch = runfolder.complete_epoch(run) if run is not None else None
    if epoch is None:
        return "no checkpoint was kept"
    return f"the last good checkpoint is {str(run / CHECKPOINT_FILE)!r} (epoch {epoch}, all values finite)"


def _finite(model: nn.Module, opt: Optimizer) -> bool:
    """Whether every floating tensor of the model and of the optimizer's state is finite (one host read)."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    tensors += [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.is_floating_point()]
    return bool(torch.stack([t.isfinite().all() for t in tensors]).all()) if tensors else True


def _own_copy(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` with a code object of its own.

    Dynamo keeps its compiled entries per code object and stops compiling a function after
    ``recompile_limit`` entries, silently running it eagerly from then on. Each fit compiles its own
    copy of the loss, so that earlier fits (of other architectures or objectives) neither use up
    this fit's entries nor need ``torch.compiler.reset()``, which would clear every compiled
    function of the user's process.
    """
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    return copy


def _epoch_metrics(
    model: LatentVariableModel, metrics: Mapping[str, Callable[[LatentVariableModel], float]] | None
) -> dict[str, float]:
    """``{name: float(fn(model))}``, each inside [`evaluating`][genvae.metrics.likelihood.evaluating]."""
    if not metrics:
        return {}
    with evaluating(model), model.validate_args(True):
        return {name: float(fn(model)) for name, fn in metrics.items()}


def _write_checkpoint(
    run: Path, model: nn.Module, opt: Optimizer, sched, rng, epoch: int, step: int, history: list[EpochStats]
) -> None:
    """Commit checkpoint.pt, model.safetensors and history.json as one set (see genvae.runfolder)."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict() if sched is not None else None,
        "rng": rng,
        "epoch": epoch,
        "history": [asdict(h) for h in history],
    }
    records = json.dumps([asdict(h) for h in history], indent=2) + "\n"
    runfolder.commit(
        run,
        epoch,
        {
            CHECKPOINT_FILE: lambda path: torch.save(state, path),
            MODEL_FILE: lambda path: save(model, path),
            HISTORY_FILE: lambda path: path.write_text(records),
        },
    )
