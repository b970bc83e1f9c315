"""The quality gate: does a newly evaluated model take the alias? A pure decision with a reason for every branch."""

from __future__ import annotations

import math

METRIC = "test_cer"  # the figure the gate compares (logged by evaluate on the test split)


def decide(new_cer: float, champion_cer: float | None) -> tuple[bool, str]:
    """Quality gate: (promote?, why). `champion_cer` is None when no version holds the alias; a NaN
    figure (unknown or not measured) never wins, and a tie keeps the current holder."""
    if math.isnan(new_cer):
        return False, "the new version's test CER is unknown (NaN)"
    if champion_cer is None:
        return True, f"no version holds the alias yet (new test CER {new_cer:.4f})"
    if math.isnan(champion_cer):
        return False, "the current holder's test CER is unknown, so the two cannot be compared: move the alias by hand"
    if new_cer < champion_cer:
        return True, f"new test CER {new_cer:.4f} < champion's {champion_cer:.4f}"
    return False, f"new test CER {new_cer:.4f} does not beat the champion's {champion_cer:.4f}"
