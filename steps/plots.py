"""Plots logged as artifacts: sample grids, learning curves, error analysis. matplotlib, headless."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_grid(items: Sequence[tuple[np.ndarray, str]], path: Path, title: str, columns: int = 4) -> Path:
    """Save canvases (uint8 [H, W, 1], ink high) with captions as one PNG grid."""
    rows = max(1, -(-len(items) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 3, rows * 1.1 + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (canvas, caption) in zip(axes.flat, items):
        ax.imshow(255 - canvas[..., 0], cmap="gray", vmin=0, vmax=255)  # back to dark ink on paper
        ax.set_title(caption, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def curves(series: dict[str, Sequence[float]], path: Path, title: str, ylabel: str) -> Path:
    """Save per-epoch curves (one line per named series) as a PNG."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def histogram(values: Sequence[float], path: Path, title: str, xlabel: str, bins: int = 20) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(values, bins=bins, color="steelblue", edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def bars(labels: Sequence[str], values: Sequence[float], path: Path, title: str, xlabel: str, ylabel: str,
         horizontal: bool = False) -> Path:
    fig, ax = plt.subplots(figsize=(7, max(4, 0.3 * len(labels))) if horizontal else (7, 4))
    if horizontal:
        ax.barh(list(labels)[::-1], list(values)[::-1], color="indianred")
    else:
        ax.bar(list(labels), list(values), color="steelblue")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
