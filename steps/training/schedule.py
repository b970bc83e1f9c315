"""The learning rate over a training run, and how long an epoch is (pure: fit.CosineDecay applies it).

A constant rate halved on plateaus left the default run's val CER jumping by 0.02-0.03 between its last
epochs (the best epoch was a lucky one); a cosine decay over the planned epochs ends each run at a low rate,
where the weights settle (README, "Training schedule"). CTC leaves its all-blank start after some
50-100 updates whatever the data size, so an epoch is never shorter than train's `min_epoch_steps` (100 by
default): a 1,500-word run would otherwise spend its first two epochs emitting blanks.
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "plateau")
FINAL_FRACTION = 0.05  # the cosine ends at this fraction of the initial rate, not at 0, where Adam would stall


def steps_per_epoch(samples: int, batch_size: int, minimum: int) -> int:
    """One pass over the training samples, or `minimum` batches when a pass is shorter."""
    return max(math.ceil(samples / batch_size), minimum)


def cosine(step: int, total_steps: int, initial: float) -> float:
    """The rate at `step` (0-based) of `total_steps`: `initial` at 0, falling along a half cosine to
    FINAL_FRACTION * initial at the last step; held there after it (a resumed or extended run)."""
    progress = min(step / max(total_steps - 1, 1), 1.0)
    final = FINAL_FRACTION * initial
    return final + (initial - final) * 0.5 * (1 + math.cos(math.pi * progress))
