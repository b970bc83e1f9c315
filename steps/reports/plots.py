"""Plots logged as artifacts: sample grids, learning curves, error analysis. matplotlib, headless."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path, dpi: int = 100) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _show_canvas(ax, canvas: np.ndarray, caption: str) -> None:
    ax.imshow(255 - canvas[..., 0], cmap="gray", vmin=0, vmax=255)  # back to dark ink on paper
    ax.set_title(caption, fontsize=9)


WIDE = 8.0  # canvases wider than this many heights (lines) get one column of their own, drawn large


def _layout(items: Sequence[tuple[np.ndarray, str]], columns: int) -> tuple[int, float, float]:
    """(columns, cell width, cell height) in inches: word canvases in a grid, line canvases one per row."""
    shape = items[0][0].shape if items else (1, 1)
    aspect = shape[1] / shape[0]
    if aspect <= WIDE:
        return columns, 3.0, 1.1
    width = 12.0
    return 1, width, width / aspect + 0.35  # the caption above each line


def image_grid(items: Sequence[tuple[np.ndarray, str]], path: Path, title: str, columns: int = 4) -> Path:
    """Save canvases (uint8 [H, W, 1], ink high) with captions as one PNG grid (lines: one per row)."""
    columns, cell_w, cell_h = _layout(items, columns)
    rows = max(1, -(-len(items) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * cell_w, rows * cell_h + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (canvas, caption) in zip(axes.flat, items):
        _show_canvas(ax, canvas, caption)
    fig.suptitle(title)
    return _save(fig, path, dpi=80)


def image_rows(groups: dict[str, Sequence[tuple[np.ndarray, str]]], path: Path, title: str, columns: int = 4) -> Path:
    """Save named groups of captioned canvases, each group starting on a new row under its own label."""
    columns, cell_w, cell_h = _layout([i for items in groups.values() for i in items], columns)
    layout = [
        (name, list(items[i : i + columns]))
        for name, items in groups.items()
        for i in range(0, max(len(items), 1), columns)
    ]
    fig, axes = plt.subplots(
        len(layout), columns, figsize=(columns * cell_w, len(layout) * (cell_h + 0.1) + 0.6), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    previous = None
    for row, (name, items) in zip(axes, layout):
        if name != previous:
            row[0].text(
                -0.08,
                0.5,
                name,
                transform=row[0].transAxes,
                rotation=90,
                va="center",
                ha="right",
                fontsize=10,
                fontweight="bold",
            )
            previous = name
        if not items:
            row[0].text(0.0, 0.5, "(none)", transform=row[0].transAxes, fontsize=9)
        for ax, (canvas, caption) in zip(row, items):
            _show_canvas(ax, canvas, caption)
    fig.suptitle(title)
    return _save(fig, path, dpi=80)


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
    return _save(fig, path)


def histogram(values: Sequence[float], path: Path, title: str, xlabel: str, bins: int = 20) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(values, bins=bins, color="steelblue", edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    ax.set_title(title)
    return _save(fig, path)


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    horizontal: bool = False,
) -> Path:
    fig, ax = plt.subplots(figsize=(7, max(4, 0.3 * len(labels))) if horizontal else (7, 4))
    if horizontal:
        ax.barh(list(labels)[::-1], list(values)[::-1], color="indianred")
    else:
        ax.bar(list(labels), list(values), color="steelblue")
        if sum(len(label) for label in labels) > 60:  # would run into each other across a 7-inch axis
            ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def reliability(table: Sequence[dict], ece: float, bins: int, path: Path, unit: str = "word") -> Path:
    """A reliability diagram from calibration.reliability's rows: per confidence bin, the fraction of samples
    (`unit`s: words, lines) read exactly right (bars), the gap to the bin's mean confidence (red), the diagonal a
    perfectly calibrated model would follow, and below it how many samples fall in each bin."""
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(6, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width, lows = 1.0 / bins, [b["low"] for b in table]
    accuracy, confidence = [b["accuracy"] for b in table], [b["confidence"] for b in table]
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    ax.bar(lows, accuracy, width=width, align="edge", color="steelblue", edgecolor="white", label="read exactly right")
    ax.bar(
        lows,
        [c - a for a, c in zip(accuracy, confidence)],
        bottom=accuracy,
        width=width,
        align="edge",
        color="indianred",
        alpha=0.45,
        edgecolor="indianred",
        label="gap to the mean confidence",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"fraction of {unit}s read right")
    ax.set_title(f"reliability of the confidence (ECE {ece:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    counts.bar(lows, [b["count"] for b in table], width=width, align="edge", color="gray", edgecolor="white")
    counts.set_xlabel("confidence")
    counts.set_ylabel(f"{unit}s")
    return _save(fig, path)
