"""Which engine runs a fit's training step: compiled or not, in bfloat16 or not, replayed as a
CUDA graph or not.

[`fit`][genvae.train.fit] takes ``compile="auto"``, ``amp="auto"`` and ``cuda_graph="auto"`` by
default and resolves them here, once per run, from the device, the model, the optimizer and the
planned number of optimizer steps (epochs × batches per epoch). An explicit value always wins. A
resumed run repeats the engine its checkpoint records, for every setting left at ``"auto"``, where
it runs on the same kind of device.

On a CPU:

- **compile**: the whole step (gradients and Adam's update, one program; see
  [`whole_step`][genvae.engines.whole_step]) when the model allows it (no parameters shared
  between parts, as a VampPrior's with its encoder), with the default optimizer in one process,
  and only for runs of at least [`COMPILE_MIN_STEPS`][genvae.engines.choice.COMPILE_MIN_STEPS]
  steps: below that, the compilation takes longer than it saves. A model with 2-d convolutions
  then gets its weights channels-last. Compiling the loss alone, the only way for the other
  models, is not chosen: it measured no faster than the eager step.
- **amp**: bfloat16 autocast with the compiled step, on CPUs whose matrix units take bfloat16
  (AVX-512 BF16 or AMX, [`native_bf16`][genvae.engines.hardware.native_bf16]). Without compile
  the casts are separate passes over memory, and without the hardware the products are emulated.

On a CUDA device, with the default optimizer in one process:

- **cuda_graph**: the whole step replayed as one CUDA graph, for runs of at least
  [`GRAPH_MIN_STEPS`][genvae.engines.choice.GRAPH_MIN_STEPS] steps;
- **compile**: as on a CPU, from ``COMPILE_MIN_STEPS`` steps (the loss compiled, inside the graph);
- **amp**: bfloat16 autocast with compile, on GPUs with bfloat16 tensor cores (compute
  capability 8.0 and later, [`bf16_matrix_units`][genvae.engines.hardware.bf16_matrix_units]).

The measurements behind these rules are on the benchmarks page of the documentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .hardware import bf16_matrix_units
from .whole_step import compiles_whole, convolutional

__all__ = ["AUTO", "COMPILE_MIN_STEPS", "GRAPH_MIN_STEPS", "Engine", "choose_engine"]

AUTO = "auto"
"""The value of ``compile``, ``amp`` and ``cuda_graph`` that lets ``choose_engine`` decide."""

COMPILE_MIN_STEPS = 2000
"""Planned optimizer steps from which ``compile="auto"`` compiles: above the break-even of compiling
a new model's step on a 2-core CPU (the MLP VAE at batch 128; measured on the benchmarks page)."""

GRAPH_MIN_STEPS = 100
"""Planned optimizer steps from which ``cuda_graph="auto"`` captures the step (three of them are
eager warm-up steps before the capture)."""


@dataclass(frozen=True)
class Engine:
    """How a fit runs its training step, as [`choose_engine`][genvae.engines.choice.choose_engine]
    resolved it; [`make_step`][genvae.engines.factory.make_step] builds the step it names.

    Attributes:
        compile: False, True or the ``torch.compile`` mode.
        amp: bfloat16 autocast of the forward pass.
        cuda_graph: the whole step replayed as one CUDA graph.
        whole_step: on a CPU, the whole step (gradients and Adam's update) compiled as one program;
            False when only the loss is compiled or nothing is.
        channels_last: the model's 2-d convolution weights are put in channels-last memory order
            (with the whole-step compile, for models that have them).
        reason: one line on why, for logs and ``genvae info``.
        device: the kind of device it was chosen for, ``"cpu"`` or ``"cuda"``: a resumed run
            repeats a recorded engine on the same kind only.
    """

    compile: bool | str
    amp: bool
    cuda_graph: bool
    whole_step: bool
    channels_last: bool
    reason: str
    device: str

    def __post_init__(self) -> None:
        flags = {name: getattr(self, name) for name in ("amp", "cuda_graph", "whole_step", "channels_last")}
        wrong = [f"{name}={value!r}" for name, value in flags.items() if not isinstance(value, bool)]
        if not (isinstance(self.compile, bool) or (isinstance(self.compile, str) and self.compile not in ("", AUTO))):
            wrong.append(f"compile={self.compile!r}")
        if not isinstance(self.reason, str) or self.device not in ("cpu", "cuda"):
            wrong.append(f"reason={self.reason!r}, device={self.device!r}")
        if wrong:
            raise ValueError(
                "expected an Engine of bools, compile a bool or a torch.compile mode, a reason and device 'cpu' or "
                f"'cuda', got {', '.join(wrong)}"
            )

    def describe(self) -> str:
        """A short name of the engine, e.g. ``"whole step compiled, bf16 autocast"``."""
        parts = []
        if self.cuda_graph:
            parts.append("CUDA graph")
        if self.compile:
            mode = f" ({self.compile})" if isinstance(self.compile, str) else ""
            parts.append(("whole step compiled" if self.whole_step else "loss compiled") + mode)
        if self.channels_last:
            parts.append("channels-last")
        parts.append("bf16 autocast" if self.amp else "float32")
        return ", ".join(parts) if self.compile or self.cuda_graph else "eager, " + parts[-1]


def _check(name: str, value: object, modes: bool) -> None:
    ok = isinstance(value, bool) or value == AUTO or (modes and isinstance(value, str) and value)
    if not ok:
        what = "True, False, 'auto' or a torch.compile mode" if modes else "True, False or 'auto'"
        raise ValueError(f"expected {name} to be {what}, got {value!r}")


def choose_engine(
    model: nn.Module,
    device: str | torch.device,
    steps: int,
    *,
    compile: bool | str = AUTO,
    amp: bool | str = AUTO,
    cuda_graph: bool | str = AUTO,
    default_optimizer: bool = True,
    processes: int = 1,
    recorded: Engine | None = None,
) -> Engine:
    """Resolve ``"auto"`` settings into the engine a fit of ``model`` runs (rules in the module's text).

    Args:
        model: the model to train (its modules decide whether the whole step compiles).
        device: where it trains.
        steps: the planned number of optimizer steps of the whole run.
        compile: False, True, a ``torch.compile`` mode or ``"auto"``.
        amp: bfloat16 autocast: True, False or ``"auto"``.
        cuda_graph: True, False or ``"auto"`` (never chosen off a CUDA device).
        default_optimizer: whether the fit builds its own Adam (the whole-step compile and the
            automatic CUDA graph need it).
        processes: the number of training processes (DistributedDataParallel: no whole-step
            compile, no CUDA graph).
        recorded: the engine the run started with, which a resumed fit reads from its checkpoint:
            on the same kind of device its values replace the settings left at ``"auto"``.

    Raises:
        ValueError: a setting that is none of its allowed values, or ``cuda_graph=True`` anywhere
            but on one CUDA device in one process.
    """
    _check("compile", compile, modes=True)
    _check("amp", amp, modes=False)
    _check("cuda_graph", cuda_graph, modes=False)
    dev = torch.device(device)
    notes: list[str] = []
    if recorded is not None and recorded.device == dev.type:
        compile, amp, cuda_graph = _repeat(recorded, notes, compile=compile, amp=amp, cuda_graph=cuda_graph)
    if cuda_graph is True and (dev.type != "cuda" or processes > 1):
        raise ValueError(
            f"expected cuda_graph=True on a single CUDA device, got device {str(dev)!r} and {processes} processes"
        )
    alone = default_optimizer and processes == 1

    if cuda_graph == AUTO:
        cuda_graph = dev.type == "cuda" and alone and steps >= GRAPH_MIN_STEPS
        if dev.type == "cuda":
            notes.append(f"CUDA graph {'on' if cuda_graph else 'off'}: {_why_steps(steps, GRAPH_MIN_STEPS, alone)}")

    whole_possible = dev.type == "cpu" and alone and compiles_whole(model)
    if compile == AUTO:
        if dev.type == "cpu" and not whole_possible:
            compile = False
            notes.append("not compiled: " + _why_not_whole(alone))
        else:
            compile = steps >= COMPILE_MIN_STEPS
            notes.append(f"{'compiled' if compile else 'not compiled'}: {_why_steps(steps, COMPILE_MIN_STEPS, True)}")

    if amp == AUTO:
        units = bf16_matrix_units(dev)
        amp = bool(compile) and units
        notes.append(_why_amp(bool(compile), units))

    whole_step = bool(compile) and whole_possible
    return Engine(
        compile=compile,
        amp=bool(amp),
        cuda_graph=bool(cuda_graph),
        whole_step=whole_step,
        channels_last=whole_step and convolutional(model),
        reason="; ".join(notes) if notes else "as given",
        device=dev.type,
    )


def _repeat(recorded: Engine, notes: list[str], **given: bool | str) -> list[bool | str]:
    """The settings ``given``, each left at ``"auto"`` replaced by ``recorded``'s value (noted)."""
    repeated = [name for name, value in given.items() if value == AUTO]
    if repeated:
        notes.append(f"{', '.join(repeated)} as the run started")
    return [getattr(recorded, name) if name in repeated else value for name, value in given.items()]


def _why_steps(steps: int, least: int, alone: bool) -> str:
    if not alone:
        return "needs the default optimizer in one process"
    return f"{steps:,} planned steps {'≥' if steps >= least else '<'} {least:,}"


def _why_not_whole(alone: bool) -> str:
    if not alone:
        return "the whole-step compile needs the default optimizer in one process"
    return "parameters shared between parts (the loss alone would compile, which measured no faster)"


def _why_amp(compiled: bool, units: bool) -> str:
    if not units:
        return "float32: no bfloat16 matrix units"
    return "bf16: bfloat16 matrix units" if compiled else "float32: bfloat16 pays only with compile"
