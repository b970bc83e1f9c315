"""Sample grids: word canvases side by side, line canvases one per row at a size their text can be read."""

from __future__ import annotations

import numpy as np
from PIL import Image

from steps.reports import plots


def _canvases(height: int, width: int, count: int) -> list[tuple[np.ndarray, str]]:
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 255, (height, width, 1), dtype=np.uint8), f"sample {i}") for i in range(count)]


def test_word_canvases_share_rows(tmp_path):
    path = plots.image_grid(_canvases(32, 128, 8), tmp_path / "words.png", "words")
    width, height = Image.open(path).size
    assert width > height  # 4 columns, 2 rows


def test_line_canvases_get_a_row_each_drawn_at_least_at_their_own_width(tmp_path):
    path = plots.image_grid(_canvases(32, 768, 6), tmp_path / "lines.png", "lines")
    width, height = Image.open(path).size
    assert width >= 768  # a line is drawn no smaller than its canvas, so its characters stay legible
    assert height > 6 * 32  # six rows, one per line
    rows = plots.image_rows({"worst": _canvases(32, 768, 2), "best": _canvases(32, 768, 2)}, tmp_path / "r.png", "r")
    assert Image.open(rows).size[0] >= 768
