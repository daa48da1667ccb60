"""Training: ``fit`` runs Adam (or any optimizer) on an objective (the negative ELBO by default),
with checkpoints that resume bit-identically, a NaN guard, the engine of its step chosen per run
([`genvae.engines`][genvae.engines]: compiled or not, bfloat16 or not, a CUDA graph or not), and
DistributedDataParallel when started under ``torchrun``.

``fit`` is one loop over named steps: check the arguments, lock the run folder, build what the
run trains with (``_prepare``: device, data, checkpoint, engine, optimizer, step), check the data,
record the run, then per epoch train (``_train_epoch``), evaluate (``_finish_epoch``) and commit a
checkpoint (``_end_epoch``). The hot loop does one gather per batch from a device-resident data
set and one training step; the loss is accumulated on the device and read back to the host only
once every ``log_every`` steps.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import runfolder
from ._checks import error_line, positive_float, positive_int
from ._files import write_json
from .data import AnyData, ImageDataset
from .data.dataset import as_dataset
from .data.loader import BatchLoader, StreamingLoader, head, make_loader
from .engines import Batch, Engine, Step, choose_engine, make_step
from .io import MODEL_FILE, describe, save
from .metrics.likelihood import evaluate_elbo, evaluating
from .objectives import ELBO, Objective
from .protocols import LatentVariableModel
from .schedules import in_steps

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


def fit(
    model: LatentVariableModel,
    train: AnyData,
    *,
    epochs: int,
    test: AnyData | None = None,
    objective: Objective | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
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
    scheduler: Callable[[Optimizer], LRScheduler] | None = None,
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
        objective: the training objective, e.g. [`IWAE`][genvae.objectives.IWAE] ``(k=5)`` or
            ``ELBO(LinearWarmup(1.0, steps=Epochs(10)))``; by default
            [`ELBO`][genvae.objectives.ELBO] ``()``, β = 1. Its β schedule counts optimizer steps
            from 1, across epochs and resumes; a length given in
            [`Epochs`][genvae.schedules.Epochs] becomes that many epochs of this run's steps
            before the first one ([`in_steps`][genvae.schedules.in_steps]; ``fit.json`` records
            the objective so converted).
        batch_size: images per step.
        lr: learning rate of the default optimizer, Adam (fused where the device supports it).
        grad_clip: clip the global gradient norm to this value.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: seeds the parameters' noise draws and the batch order.
        compile: ``torch.compile`` the step; a string picks its mode, e.g. ``"max-autotune"``;
            ``"auto"`` (the default) decides from the device, the model and the planned number of
            steps (see [`genvae.engines`][genvae.engines]; ``FitResult.engine`` says what ran), and
            on ``resume`` repeats what the run's checkpoint records. On a
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
            scheduler and RNG states, step count, history and the engine), ``model.safetensors``
            and ``history.json`` as one set committed by ``manifest.json`` (see
            [`genvae.runfolder`][genvae.runfolder]). The folder is locked while ``fit`` runs.
            Nothing in it is written or removed (leftovers of a killed write, ``fit.json``) until
            every check has passed and, with ``resume``, the checkpoint has been read into the
            model and optimizer: a call that fails leaves the folder as it was.
        resume: continue from the verified set in ``out`` (from scratch if it has none yet); the
            weights then match an uninterrupted run bit for bit on the CPU. Settings of
            ``compile``, ``amp`` and ``cuda_graph`` left at ``"auto"`` take the values of the
            engine the checkpoint records (on the same kind of device), so that the resumed run
            repeats the engine the run started with.
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
    _check_arguments(epochs, batch_size, lr, log_every, grad_clip, objective, metrics)
    rank, world, created_group = _distributed()
    folder = Path(out) if out is not None else None
    with ExitStack() as stack:
        if created_group:
            stack.callback(dist.destroy_process_group)
        if folder is not None and rank == 0:
            _check_describable(model)
            stack.enter_context(runfolder.lock(folder))  # before anything is read from or written to the folder
        engine = {"compile": compile, "amp": amp, "cuda_graph": cuda_graph}  # "auto" or as given
        run = _prepare(
            model, train, folder, rank, world, epochs=epochs, objective=objective, batch_size=batch_size, lr=lr,
            grad_clip=grad_clip, device=device, seed=seed, engine=engine, resume=resume, optimizer=optimizer,
            scheduler=scheduler, num_workers=num_workers,
        )  # fmt: skip
        _check_data(model, train, run.dev)
        if folder is not None and rank == 0:  # every check has passed: the first writes to the folder
            record = _describe_fit(train, test, run.objective, epochs, batch_size, lr, seed, run.engine)
            _write_records(folder, config, record)
        show = progress if progress is not None else sys.stderr.isatty()
        with model.validate_args(False):
            for epoch in range(run.start, epochs):
                seen, seconds = _train_epoch(run, epoch, epochs, log_every, show)
                stats = _finish_epoch(run, epoch, seen, seconds, test, seed, metrics)
                _end_epoch(run, stats, callbacks)
    return FitResult(run.history, folder, run.engine)


@dataclass
class _Run:
    """What one call of ``fit`` trains with, built by ``_prepare`` before the first epoch."""

    model: LatentVariableModel
    objective: Objective  # with its schedules' lengths in optimizer steps
    engine: Engine
    step: Step
    loader: BatchLoader | StreamingLoader
    opt: Optimizer
    sched: LRScheduler | None
    count: Tensor  # () int64: optimizer steps taken; drives β schedules and is checkpointed
    running: Tensor  # () the epoch's summed loss, read back every log_every steps
    dev: torch.device
    rank: int
    world: int
    folder: Path | None
    history: list[EpochStats]  # every epoch so far, those of a resumed checkpoint included
    start: int  # the first epoch to train, from 0


def _check_arguments(
    epochs: int,
    batch_size: int,
    lr: float,
    log_every: int,
    grad_clip: float | None,
    objective: Objective | None,
    metrics: Mapping[str, Callable[[LatentVariableModel], float]] | None,
) -> None:
    """Fail, naming the argument, before anything is built, read or written."""
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    positive_int("log_every", log_every)
    positive_float("lr", lr)
    if grad_clip is not None:
        positive_float("grad_clip", grad_clip)
    if objective is not None and not (callable(objective) and hasattr(objective, "k")):
        raise TypeError(f"expected objective to be an Objective (callable, with k), got {type(objective).__name__}")
    for name, fn in (metrics or {}).items():
        if not (isinstance(name, str) and callable(fn)):
            raise TypeError(f"expected metrics as {{name: fn(model) -> float}}, got {name!r}: {fn!r}")


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


def _prepare(
    model: LatentVariableModel,
    train: ImageDataset | Dataset,
    folder: Path | None,
    rank: int,
    world: int,
    *,
    epochs: int,
    objective: Objective | None,
    batch_size: int,
    lr: float,
    grad_clip: float | None,
    device: str | torch.device,
    seed: int,
    engine: Mapping[str, bool | str],
    resume: bool,
    optimizer: Callable[[Iterable[nn.Parameter]], Optimizer] | None,
    scheduler: Callable[[Optimizer], LRScheduler] | None,
    num_workers: int | None,
) -> _Run:
    """Build what the run trains with, in order: device, folder check, data, the checkpoint to
    resume, engine (``engine`` holds fit's ``compile``, ``amp`` and ``cuda_graph``), optimizer,
    the restored state and the step. Reads only: nothing is written to the folder."""
    dev = _training_device(device, rank, world)
    committed = _committed_epoch(folder, resume)
    torch.manual_seed(seed + rank)
    model.to(dev)
    loader = make_loader(
        train, batch_size, shuffle=True, drop_last=False, device=dev, rank=rank, world_size=world,
        generator=torch.Generator().manual_seed(seed), dtype=next(model.parameters()).dtype, num_workers=num_workers,
    )  # fmt: skip
    state = _read_checkpoint(folder, dev) if folder is not None and resume and committed is not None else None
    chosen = choose_engine(
        model, dev, epochs * len(loader), **engine, default_optimizer=optimizer is None, processes=world,
        recorded=_recorded_engine(state, folder) if folder is not None and state is not None else None,
    )  # fmt: skip
    if rank == 0:
        log.info("engine: %s (%s)", chosen.describe(), chosen.reason)
    if chosen.channels_last:
        model.to(memory_format=torch.channels_last)  # the weights' layout; values and names unchanged
    opt = _optimizer(model, chosen, lr, dev, optimizer)
    sched = scheduler(opt) if scheduler is not None else None
    count = torch.zeros((), dtype=torch.int64, device=dev)
    history: list[EpochStats] = []
    start = 0
    if state is not None:
        history, start = _restore(state, folder, model, opt, sched, loader, count, rank)
    counted: Objective = in_steps(objective if objective is not None else ELBO(), len(loader))
    net = model if world == 1 else nn.parallel.DistributedDataParallel(model, device_ids=_ddp_ids(dev))
    running = torch.zeros((), device=dev)
    step = make_step(net, counted, opt, chosen, step=count, running=running, grad_clip=grad_clip)
    return _Run(
        model, counted, chosen, step, loader, opt, sched, count, running, dev, rank, world, folder, history, start
    )


def _training_device(device: str | torch.device, rank: int, world: int) -> torch.device:
    """The resolved device; under torchrun on GPUs, this process's own GPU (``LOCAL_RANK``)."""
    dev = resolve_device(device)
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(dev)
    return dev


def _ddp_ids(dev: torch.device) -> list[int] | None:
    return [dev.index] if dev.type == "cuda" else None


def _committed_epoch(folder: Path | None, resume: bool) -> int | None:
    """The last committed epoch of ``folder`` (None for none); a checkpoint without a manifest, or
    one that ``resume`` does not continue, is an error."""
    if folder is None:
        return None
    committed = runfolder.complete_epoch(folder)
    if committed is None and os.path.lexists(folder / CHECKPOINT_FILE):
        raise ValueError(
            f"expected a manifest.json beside {str(folder / CHECKPOINT_FILE)!r} (genvae 0.2 run folders have one), "
            "found none, so the checkpoint cannot be verified; train into a new folder"
        )
    if committed is not None and not resume:
        raise FileExistsError(
            f"expected an empty run folder, but {str(folder)!r} holds a checkpoint of epoch {committed}; pass "
            "resume=True to continue that run or choose another out"
        )
    return committed


def _recorded_engine(state: dict, folder: Path) -> Engine | None:
    """The engine a resumed run started with, as its checkpoint records it (None in a checkpoint
    written before genvae recorded it)."""
    record = state.get("engine")
    if record is None:
        return None
    try:
        return Engine(**record)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"expected the engine recorded in {str(folder / CHECKPOINT_FILE)!r} to hold the fields of an Engine: "
            f"{str(err).splitlines()[0]}"
        ) from None


def _optimizer(
    model: nn.Module,
    engine: Engine,
    lr: float,
    dev: torch.device,
    factory: Callable[[Iterable[nn.Parameter]], Optimizer] | None,
) -> Optimizer:
    """``factory`` on the trainable parameters, or the default Adam: fused where the device has
    it; under a CUDA graph capturable, its learning rate a device tensor so that a scheduler's
    updates reach the captured kernels."""
    params = [p for p in model.parameters() if p.requires_grad]
    if factory is not None:
        return factory(params)
    return torch.optim.Adam(
        params,
        lr=torch.tensor(lr, device=dev) if engine.cuda_graph else lr,
        fused=dev.type in ("cpu", "cuda"),
        capturable=engine.cuda_graph,
    )


def _restore(
    state: dict,
    folder: Path | None,
    model: nn.Module,
    opt: Optimizer,
    sched: LRScheduler | None,
    loader: BatchLoader | StreamingLoader,
    count: Tensor,
    rank: int,
) -> tuple[list[EpochStats], int]:
    """Load a checkpoint into the model, optimizer, scheduler, step count and random states:
    the history so far and the epoch to start from."""
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        history = [EpochStats(**h) for h in state["history"]]
        start = int(state["epoch"])
        count.fill_(int(state.get("step", start * len(loader))))
        _set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"], count.device, loader)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
        raise ValueError(
            f"the checkpoint in {str(folder)!r} does not fit this model and optimizer (resume with the settings "
            f"it was trained with): {str(err).strip().splitlines()[0]}"
        ) from None
    log.info("resuming %s at epoch %d", folder, start + 1)
    return history, start


def _check_data(model: LatentVariableModel, train: ImageDataset | Dataset, dev: torch.device) -> None:
    """Check the first examples once through the model, so that the steps can skip their value checks
    (host reads): values, labels, the likelihood's event shape. In eval mode with the random state
    forked, so that the check changes no buffer and no draw."""
    x0, y0 = head(train, 1024, next(model.parameters()).dtype)
    conditional = model.num_classes is not None
    if conditional and y0 is None:
        raise ValueError(f"expected labelled train data for a conditional model, got {type(train).__name__} without")
    with model.validate_args(True), evaluating(model):
        model.terms(x0.to(dev), y0.to(dev) if conditional else None)


def _write_records(folder: Path, config: Mapping[str, object] | None, record: dict[str, object]) -> None:
    """The first writes to the folder: a killed write's leftovers removed, ``config.json`` and ``fit.json``."""
    removed = runfolder.recover(folder)
    if removed:
        log.warning("removed leftovers of a killed write in %s: %s", folder, ", ".join(removed))
    if config is not None:
        write_json(folder / CONFIG_FILE, dict(config))
    write_json(folder / FIT_FILE, record)


def _train_epoch(run: _Run, epoch: int, epochs: int, log_every: int, show: bool) -> tuple[int, float]:
    """One pass over this process's batches: (examples seen, seconds). The loss is summed in
    ``run.running`` and read back, with a NaN check, every ``log_every`` steps and at the end."""
    run.model.train()
    run.running.zero_()
    step, conditional, steps = run.step, run.model.num_classes is not None, len(run.loader)
    seen, t0 = 0, time.perf_counter()
    bar = tqdm(
        run.loader, total=steps, desc=f"epoch {epoch + 1}/{epochs}", disable=not show or run.rank != 0, leave=False
    )
    for i, (x, y) in enumerate(bar, start=1):
        step(Batch(x, y if conditional else None))
        seen += x.shape[0]
        if i % log_every == 0 or i == steps:
            mean = float(run.running) / i
            if not math.isfinite(mean):
                raise FloatingPointError(
                    f"loss is {mean} at epoch {epoch + 1}, step {i} (checked every {log_every} steps); "
                    + _last_good(run.folder)
                )
            bar.set_postfix(loss=f"{mean:.2f}")
    if run.dev.type == "cuda":
        torch.cuda.synchronize(run.dev)
    return seen, time.perf_counter() - t0


def _finish_epoch(
    run: _Run,
    epoch: int,
    seen: int,
    seconds: float,
    test: ImageDataset | Dataset | None,
    seed: int,
    metrics: Mapping[str, Callable[[LatentVariableModel], float]] | None,
) -> EpochStats:
    """After an epoch's steps: the weights checked, the test set and the metrics evaluated (rank 0)
    and the scheduler stepped; the epoch's record, appended to ``run.history``."""
    train_loss = float(run.running) / len(run.loader)
    if not _finite(run.model, run.opt):
        raise FloatingPointError(
            f"the weights or the optimizer's state became NaN or inf in epoch {epoch + 1} (its losses were "
            "finite, so in the last step's update); " + _last_good(run.folder)
        )
    summary = evaluate_elbo(run.model, test, seed=seed) if test is not None and run.rank == 0 else None
    if summary is not None and not math.isfinite(summary.loss):
        raise FloatingPointError(f"the test loss is {summary.loss} after epoch {epoch + 1}; " + _last_good(run.folder))
    if run.sched is not None:
        _step_scheduler(run.sched, summary.loss if summary is not None else train_loss)
    stats = EpochStats(
        epoch=epoch + 1,
        train_loss=train_loss,
        test_loss=summary.loss if summary else None,
        test_kl=summary.kl if summary else None,
        test_log_likelihood=summary.log_likelihood if summary else None,
        seconds=seconds,
        images_per_second=seen * run.world / seconds,
        metrics=_epoch_metrics(run.model, metrics) if run.rank == 0 else {},
    )
    run.history.append(stats)
    return stats


def _end_epoch(run: _Run, stats: EpochStats, callbacks: Sequence[Callable[[EpochStats, nn.Module], None]]) -> None:
    """Commit the epoch's checkpoint (with every process's random state) and call the callbacks (rank 0)."""
    rng: object = _rng_state(run.dev, run.loader)
    if run.world > 1:
        gathered: list[object] = [None] * run.world
        dist.all_gather_object(gathered, rng)
        rng = gathered
    if run.rank != 0:
        return
    log.info("epoch %d: %s", stats.epoch, stats)
    if run.folder is not None:
        _write_checkpoint(run, rng, stats.epoch)
    for callback in callbacks:
        callback(stats, run.model)


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


def _step_scheduler(sched: LRScheduler, loss: float) -> None:
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


def _epoch_metrics(
    model: LatentVariableModel, metrics: Mapping[str, Callable[[LatentVariableModel], float]] | None
) -> dict[str, float]:
    """``{name: float(fn(model))}``, each inside [`evaluating`][genvae.metrics.likelihood.evaluating]."""
    if not metrics:
        return {}
    with evaluating(model), model.validate_args(True):
        return {name: float(fn(model)) for name, fn in metrics.items()}


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


def _write_checkpoint(run: _Run, rng: object, epoch: int) -> None:
    """Commit checkpoint.pt, model.safetensors and history.json as one set (see genvae.runfolder)."""
    history = [asdict(h) for h in run.history]
    state = {
        "step": int(run.count),
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict() if run.sched is not None else None,
        "rng": rng,
        "epoch": epoch,
        "history": history,
        "engine": asdict(run.engine),  # what a resumed run repeats
    }
    records = json.dumps(history, indent=2) + "\n"
    model = run.model
    runfolder.commit(
        run.folder,  # type: ignore[arg-type]
        epoch,
        {
            CHECKPOINT_FILE: lambda path: torch.save(state, path),
            MODEL_FILE: lambda path: save(model, path),
            HISTORY_FILE: lambda path: path.write_text(records),
        },
    )
