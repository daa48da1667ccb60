"""Argument checks shared by every layer: each error names the argument, what was expected and
what came."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def error_line(err: BaseException) -> str:
    """Why ``err`` happened, in one line: its first line, or, where ``torch.load(weights_only=True)``
    refused a pickle (a paragraph that suggests ``weights_only=False``), the cause it names: the
    text after ``WeightsUnpickler error:``, or the line naming the refused ``GLOBAL``."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if not lines[0].startswith("Weights only load failed"):
        return lines[0]
    marker = "WeightsUnpickler error:"
    at = next((i for i, line in enumerate(lines) if marker in line), None)
    if at is not None:  # the cause follows the marker, on its line or the next
        cause = lines[at].split(marker, 1)[1].strip() or (lines[at + 1] if at + 1 < len(lines) else "")
    else:
        cause = next((line for line in lines if "GLOBAL" in line), lines[0])
    cause = cause.split(". ")[0].strip().rstrip(".")
    if "GLOBAL" in cause:
        return f"it holds Python objects other than tensors and plain values ({cause}); they were refused unread"
    return f"torch.load(weights_only=True) refused it: {cause}"


def positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an ``int`` > 0 (not a bool), else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected {name} to be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"expected {name} to be a positive int, got {value}")
    return value


def positive_float(name: str, value: object) -> float:
    """Return ``float(value)`` if it is a finite real number > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected {name} to be a positive number, got {type(value).__name__} {value!r}")
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"expected {name} to be a positive finite number, got {value}")
    return float(value)


def shape_tuple(name: str, value: object) -> tuple[int, ...]:
    """Return ``value`` as a tuple of positive ints (an int becomes a 1-tuple), else raise."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) == 0:
        raise TypeError(f"expected {name} to be a non-empty tuple of positive ints, got {value!r}")
    return tuple(positive_int(f"{name}[{i}]", v) for i, v in enumerate(value))


def optional_num_classes(value: object) -> int | None:
    """``None`` or an int ≥ 2."""
    if value is None:
        return None
    n = positive_int("num_classes", value)
    if n < 2:
        raise ValueError(f"expected num_classes >= 2 or None, got {n}")
    return n


def check_data(name: str, x: object, data_shape: tuple[int, ...] | None) -> Tensor:
    """Check that ``x`` is a floating tensor of shape ``(B, *data_shape)``; no values are read."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"expected {name} with a floating dtype, got {x.dtype}")
    if data_shape is not None and tuple(x.shape[1:]) != data_shape or x.dim() == 0:
        expected = "(B, " + ", ".join(map(str, data_shape or ())) + ")"
        raise ValueError(f"expected {name} of shape {expected}, got {tuple(x.shape)}")
    return x


def check_labels(y: object, batch: int, num_classes: int | None, *, values: bool) -> Tensor:
    """Check that ``y`` is an integer tensor of shape ``(batch,)`` (values in range if asked)."""
    if not isinstance(y, Tensor):
        raise TypeError(f"expected y to be an integer torch.Tensor of shape ({batch},), got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"expected y with an integer dtype, got {y.dtype}")
    if tuple(y.shape) != (batch,):
        raise ValueError(f"expected y of shape ({batch},), got {tuple(y.shape)}")
    if values and num_classes is not None and y.numel() > 0:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"expected y in range(0, {num_classes}), got values in [{lo}, {hi}]")
    return y
