"""Schedules for a weight such as β, the KL weight of the ELBO: small objects with ``value(step)``.

``step`` counts optimizer steps from 1. It may be a Python int (the value is a float) or a 0-d
tensor (the value is a tensor, so that a compiled training step reads the step count without a
host read or a recompilation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Constant", "Cyclical", "LinearWarmup", "Schedule", "as_schedule"]


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
    steps: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", _non_negative("beta", self.beta))
        _positive_steps("steps", self.steps)

    def value(self, step: int | Tensor) -> float | Tensor:
        return self.beta * _clamp01(step / self.steps)


@dataclass(frozen=True)
class Cyclical:
    """Cyclical annealing (Fu et al., 2019, https://arxiv.org/abs/1903.10145).

    Training is cut into cycles of ``period`` steps; in each, the weight rises linearly from 0 to
    ``beta`` over the first ``ratio`` of the cycle and stays there for the rest:
    value(t) = beta · min(1, ((t − 1) mod period) / (period · ratio)). Fu et al. use 4 cycles over
    the run and ratio 0.5.
    """

    beta: float = 1.0
    period: int = 1
    ratio: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", _non_negative("beta", self.beta))
        _positive_steps("period", self.period)
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 < self.ratio <= 1:
            raise ValueError(f"expected ratio in (0, 1], got {self.ratio!r}")

    def value(self, step: int | Tensor) -> float | Tensor:
        position = (step - 1) % self.period  # steps into the current cycle, from 0
        return self.beta * _clamp01(position / (self.period * self.ratio))


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
