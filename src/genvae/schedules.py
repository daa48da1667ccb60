"""Schedules for a weight such as β, the KL weight of the ELBO: small objects with ``value(step)``.

``step`` counts optimizer steps from 1. It may be a Python int (the value is a float) or a 0-d
tensor (the value is a tensor, so that a compiled training step reads the step count without a
host read or a recompilation).

A length may also be given in epochs, ``LinearWarmup(1.0, steps=Epochs(5))``: before training,
[`fit`][genvae.train.fit] turns it into optimizer steps with
[`in_steps`][genvae.schedules.in_steps] and the number of batches of its epochs, so that only the
run that knows that number counts it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Protocol, TypeVar, runtime_checkable

from torch import Tensor

__all__ = ["Constant", "Cyclical", "Epochs", "LinearWarmup", "Schedule", "as_schedule", "in_steps"]

T = TypeVar("T")


@runtime_checkable
class Schedule(Protocol):
    """A weight as a function of the optimizer step."""

    def value(self, step: int | Tensor) -> float | Tensor:
        """The weight at ``step`` (counted from 1)."""
        ...


def _non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"expected {name} to be a finite number >= 0, got {value!r}")
    return float(value)


def _positive_steps(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected {name} to be a positive int (optimizer steps), got {value!r}")
    return value


@dataclass(frozen=True)
class Epochs:
    """A schedule's length in epochs of training: ``LinearWarmup(1.0, steps=Epochs(5))`` rises over
    five epochs, ``Cyclical(1.0, period=Epochs(4))`` cycles every four.

    [`fit`][genvae.train.fit] turns it into ``n`` × the optimizer steps of one of its epochs before
    the first step (see [`in_steps`][genvae.schedules.in_steps]); a schedule whose length is still
    in epochs refuses to give a value.
    """

    n: int

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"expected Epochs(n) with n a positive int, got {self.n!r}")


def _length(name: str, value: object) -> int | Epochs:
    return value if isinstance(value, Epochs) else _positive_steps(name, value)


def _counted(owner: object, length: int | Epochs) -> int:
    if isinstance(length, Epochs):
        raise ValueError(
            f"expected {owner!r} to be given its length in optimizer steps; fit converts Epochs itself, "
            "elsewhere call in_steps(schedule, steps_per_epoch) first"
        )
    return length


def _clamp01(t: float | Tensor) -> float | Tensor:
    return t.clamp(0.0, 1.0) if isinstance(t, Tensor) else min(1.0, max(0.0, t))


@dataclass(frozen=True)
class Constant:
    """The same value at every step."""

    beta: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", _non_negative("beta", self.beta))

    def value(self, step: int | Tensor) -> float | Tensor:
        return self.beta


@dataclass(frozen=True)
class LinearWarmup:
    """0 before the first step, rising linearly to ``beta`` at step ``steps``, then constant.

    The KL annealing of Bowman et al. (2016, https://arxiv.org/abs/1511.06349):
    value(t) = beta · min(1, t / steps).
    """

    beta: float = 1.0
    steps: int | Epochs = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", _non_negative("beta", self.beta))
        _length("steps", self.steps)

    def value(self, step: int | Tensor) -> float | Tensor:
        return self.beta * _clamp01(step / _counted(self, self.steps))


@dataclass(frozen=True)
class Cyclical:
    """Cyclical annealing (Fu et al., 2019, https://arxiv.org/abs/1903.10145).

    Training is cut into cycles of ``period`` steps; in each, the weight rises linearly from 0 to
    ``beta`` over the first ``ratio`` of the cycle and stays there for the rest:
    value(t) = beta · min(1, ((t − 1) mod period) / (period · ratio)). Fu et al. use 4 cycles over
    the run and ratio 0.5.
    """

    beta: float = 1.0
    period: int | Epochs = 1
    ratio: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", _non_negative("beta", self.beta))
        _length("period", self.period)
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 < self.ratio <= 1:
            raise ValueError(f"expected ratio in (0, 1], got {self.ratio!r}")

    def value(self, step: int | Tensor) -> float | Tensor:
        period = _counted(self, self.period)
        position = (step - 1) % period  # steps into the current cycle, from 0
        return self.beta * _clamp01(position / (period * self.ratio))


def as_schedule(beta: float | Schedule, name: str = "beta") -> Schedule:
    """A number becomes [`Constant`][genvae.schedules.Constant]; a schedule is returned as it is.

    Anything else is an error that names ``name``.
    """
    if isinstance(beta, Schedule) and not isinstance(beta, (int, float)):
        return beta
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(f"expected {name} to be a number >= 0 or a schedule with value(step), got {beta!r}")
    if not 0 <= beta < float("inf"):
        raise ValueError(f"expected {name} to be a finite number >= 0, got {beta!r}")
    return Constant(float(beta))


def in_steps(part: T, steps_per_epoch: int) -> T:
    """``part`` with every length given in [`Epochs`][genvae.schedules.Epochs] turned into
    optimizer steps, ``n × steps_per_epoch``.

    ``part`` is a schedule, or a dataclass that holds one in a field (an objective such as
    ``ELBO(LinearWarmup(1.0, steps=Epochs(5)))``, at any depth); what changes is rebuilt with
    ``dataclasses.replace``, and what holds no ``Epochs`` is returned as it is. This is how
    [`fit`][genvae.train.fit] tells the schedules of its objective the batches of its epochs.

    Args:
        part: a schedule, an objective, or any other value.
        steps_per_epoch: the optimizer steps of one epoch (a positive int).
    """
    _positive_steps("steps_per_epoch", steps_per_epoch)
    if isinstance(part, Epochs):
        return part.n * steps_per_epoch  # type: ignore[return-value]
    if not is_dataclass(part) or isinstance(part, type):
        return part
    changes = {}
    for f in fields(part):
        if f.init:
            value = getattr(part, f.name)
            converted = in_steps(value, steps_per_epoch)
            if converted is not value:
                changes[f.name] = converted
    return replace(part, **changes) if changes else part  # type: ignore[type-var]
