"""steps.training.report: the augmentation grid a training run logs, drawn from a real dataset directory."""

from __future__ import annotations

import numpy as np
from PIL import Image

from steps.dataset.info import DatasetInfo
from steps.training.fit import Fitted
from steps.training.report import augmentation_grid
from tests.steps.training.test_inputs import dataset_dir  # noqa: F401  (the fixture)


def test_augmentation_grid_is_a_png_of_the_stored_words_and_their_warps(dataset_dir, tmp_path):  # noqa: F811
    fitted = Fitted(model=None, history={}, dataset=DatasetInfo.load(str(dataset_dir)), stopped="")
    path = augmentation_grid(fitted, tmp_path, count=4, draws=3)
    assert path == tmp_path / "augmented.png"
    image = np.asarray(Image.open(path).convert("L"))
    # four rows of canvases (as stored + three draws) on white: the figure is taller than wide / 4 columns
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert (image < 128).mean() > 0.01  # ink and captions are drawn, not an empty figure
