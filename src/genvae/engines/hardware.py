"""What the device does in hardware, as far as the choice of an engine (and of the IW evaluation's
precision) asks: bfloat16 matrix products on a CPU (AMX or AVX-512 BF16) or on a GPU (compute
capability 8.0 and later)."""

from __future__ import annotations

import torch

__all__ = ["BF16_CAPABILITY", "bf16_matrix_units", "native_bf16"]

BF16_CAPABILITY = (8, 0)
"""The CUDA compute capability from which a GPU has bfloat16 tensor cores (Ampere)."""


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` is a CPU with bfloat16 matrix products in hardware (AMX or AVX-512 BF16).

    [`evaluate_iw_nll`][genvae.metrics.likelihood.evaluate_iw_nll] uses bfloat16 there by default,
    and [`choose_engine`][genvae.engines.choice.choose_engine] turns on bfloat16 autocast with the
    compiled step; on any other device it is opt-in.
    """
    if torch.device(device).type != "cpu":
        return False
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def bf16_matrix_units(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a CPU for which
    [`native_bf16`][genvae.engines.hardware.native_bf16] holds, a GPU of compute capability
    [`BF16_CAPABILITY`][genvae.engines.hardware.BF16_CAPABILITY] or later."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= BF16_CAPABILITY
    return native_bf16(device)
