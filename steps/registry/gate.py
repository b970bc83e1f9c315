"""The quality gate: does a newly evaluated model take the alias? A pure decision with a reason for every branch."""

from __future__ import annotations

import math

METRIC = "test_cer"  # the figure the gate compares (logged by evaluate on the test split)


def admissible(new_cer: float, max_cer: float) -> tuple[bool, str]:
    """The absolute bar: is a model good enough to be registered at all? (admit?, why not / what to do)."""
    if math.isnan(new_cer):
        return False, "its test CER is unknown (NaN): evaluate it first"
    if new_cer > max_cer:
        reads = "reads nothing" if new_cer >= 1.0 else f"gets {new_cer:.0%} of the characters wrong"
        return False, (
            f"test CER {new_cer:.4f} is above max_cer {max_cer}: the model {reads}. Train longer (-P epochs=...), "
            "on more data (-P num_words=... or your own dataset), or lower the bar on purpose (-P max_cer=...)"
        )
    return True, f"test CER {new_cer:.4f} <= max_cer {max_cer}"


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
