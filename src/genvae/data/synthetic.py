"""A small labelled image set drawn from strokes: digits-like shapes, no download needed."""

from __future__ import annotations

import math

import torch

from .._checks import positive_int
from .dataset import ImageDataset

__all__ = ["synthetic_digits"]


def _polyline(*pts: tuple[float, float], closed: bool = False) -> list[tuple[float, float, float, float]]:
    pts = pts + (pts[0],) if closed else pts
    return [(*a, *b) for a, b in zip(pts[:-1], pts[1:])]


def _ring(cx: float, cy: float, rx: float, ry: float, k: int = 12) -> list[tuple[float, float, float, float]]:
    return _polyline(
        *[(cx + rx * math.cos(2 * math.pi * i / k), cy + ry * math.sin(2 * math.pi * i / k)) for i in range(k)],
        closed=True,
    )


# Strokes (x0, y0, x1, y1) per class, in image units: [-1, 1] across, y down.
_SHAPES = [
    _ring(0, 0, 0.45, 0.65),  # 0 ellipse
    _polyline((0, -0.7), (0, 0.7)),  # 1 vertical bar
    _polyline((-0.5, -0.6), (0.5, -0.6), (-0.5, 0.6), (0.5, 0.6)),  # 2 Z
    _polyline((-0.6, 0), (0.6, 0)) + _polyline((0, -0.6), (0, 0.6)),  # 3 plus
    _polyline((-0.55, -0.6), (0.55, 0.6)) + _polyline((0.55, -0.6), (-0.55, 0.6)),  # 4 X
    _polyline((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5), closed=True),  # 5 square
    _polyline((0, -0.6), (0.6, 0.5), (-0.6, 0.5), closed=True),  # 6 triangle
    _polyline((-0.5, -0.6), (0.5, -0.6), (-0.1, 0.7)),  # 7 seven
    _ring(0, -0.35, 0.3, 0.3, 8) + _ring(0, 0.35, 0.3, 0.3, 8),  # 8 two rings
    _polyline((-0.6, -0.3), (0.6, -0.3)) + _polyline((-0.6, 0.3), (0.6, 0.3)),  # 9 equals
]


def synthetic_digits(
    n: int, *, seed: int = 0, size: int = 28, num_classes: int = 10, channels: int = 1
) -> ImageDataset:
    """A small labelled image set drawn without any download, deterministic for a seed.

    Class ``c`` is a distinct stroke shape (ellipse, bar, Z, plus, X, square, triangle, seven, two
    rings, equals), antialiased and drawn with a random shift (±2 px), scale (0.85–1.05), rotation
    (±10°), stroke width (2–3.5 px) and intensity; classes are balanced and shuffled. With
    ``channels=3`` each shape is drawn in a random bright colour on a random dark one, a colour
    set of CIFAR-10's shape with ``size=32``.

    Returns:
        An [`ImageDataset`][genvae.data.dataset.ImageDataset] with images ``(n, channels, size, size)``
        uint8 and labels ``(n,)``.
    """
    if channels not in (1, 3):
        raise ValueError(f"expected channels 1 or 3, got {channels!r}")
    positive_int("n", n)
    if positive_int("size", size) < 8:
        raise ValueError(f"expected size >= 8, got {size}")
    if not 2 <= positive_int("num_classes", num_classes) <= len(_SHAPES):
        raise ValueError(f"expected num_classes in 2..{len(_SHAPES)}, got {num_classes}")
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    u = torch.rand(n, 6, generator=g, dtype=torch.float32)  # whatever the default dtype
    px = 2.0 / size  # one pixel in image units
    shift = (u[:, 0:2] - 0.5) * 4 * px  # (n, 2)
    scale = 0.85 + 0.2 * u[:, 2]  # (n,)
    angle = (u[:, 3] - 0.5) * math.radians(20)  # (n,)
    width = 2.0 + 1.5 * u[:, 4]  # (n,) pixels
    ink = 0.75 + 0.25 * u[:, 5]  # (n,)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (n, 2, 2)
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) * px - 1
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    p = torch.stack([xx.flatten(), yy.flatten()], 1)  # (HW, 2) as (x, y)
    out = torch.zeros(n, size * size, dtype=torch.float32)
    for c in range(num_classes):
        idx = (labels == c).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        seg = torch.tensor(_SHAPES[c], dtype=torch.float32)  # (K, 4)
        a = torch.einsum("mij,kj->mki", rot[idx], seg[:, :2]) + shift[idx, None]  # (m, K, 2)
        b = torch.einsum("mij,kj->mki", rot[idx], seg[:, 2:]) + shift[idx, None]
        dist = torch.full((len(idx), size * size), float("inf"), dtype=torch.float32)
        for k in range(len(seg)):
            ab = (b[:, k] - a[:, k])[:, None]  # (m, 1, 2)
            ap = p[None] - a[:, k, None]  # (m, HW, 2)
            t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
            dist = torch.minimum(dist, (ap - t[..., None] * ab).norm(dim=-1))
        out[idx] = (width[idx, None] / 2 + 0.5 - dist / px).clamp(0, 1) * ink[idx, None]
    if channels == 3:  # a stroke of colour fg over a background bg: bg + (fg − bg) · coverage
        bg, fg = 0.5 * torch.rand(n, 3, 1, generator=g), 0.5 + 0.5 * torch.rand(n, 3, 1, generator=g)
        out = bg + (fg - bg) * out[:, None]  # (n, 3, HW)
    images = out.mul_(255).round_().to(torch.uint8).view(n, channels, size, size)
    return ImageDataset(images, labels, num_classes)
