"""claim_alias against a real sqlite registry: the holder re-read before the move and checked after it, so a
register that moves the alias in between (a concurrent one, here a thread) is compared again."""

from __future__ import annotations

import threading
import time

import pytest

from steps.registry import versions

NAME, ALIAS = "Model", "champion"


@pytest.fixture
def registry(mlflow_store, tmp_path):
    """A registered model with versions 1..3 of test CER 0.5, 0.3 and 0.7."""
    mlflow_store.create_registered_model(NAME)
    for cer in (0.5, 0.3, 0.7):
        mlflow_store.create_model_version(NAME, str(tmp_path), tags={versions.TAG_CER: repr(cer)})
    return mlflow_store


def holder(client) -> str:
    return str(client.get_registered_model(NAME).aliases.get(ALIAS, ""))


def test_no_holder_then_a_better_then_a_worse_version(registry):
    first = versions.claim_alias(registry, NAME, ALIAS, "1", 0.5)
    assert (first.promoted, first.previous, first.champion) == (True, None, "1")
    better = versions.claim_alias(registry, NAME, ALIAS, "2", 0.3)
    assert better.promoted and str(better.previous.version) == "1" and better.previous_cer == 0.5
    worse = versions.claim_alias(registry, NAME, ALIAS, "3", 0.7)
    assert not worse.promoted and worse.champion == "2" and "does not beat" in worse.reason
    again = versions.claim_alias(registry, NAME, ALIAS, "2", 0.3)
    assert not again.promoted and again.reason == "it already holds the alias"
    assert holder(registry) == "2"


def test_a_worse_version_moved_in_meanwhile_loses_the_alias_again(registry):
    """Version 3 (CER 0.7) read the old holder before version 2 (0.3) moved, and moves just after: version 2's
    check a settle interval later sees it, compares again and takes the alias back."""
    registry.set_registered_model_alias(NAME, ALIAS, "1")

    def late_worse_move():
        # right after version 2's move, as a register that read the holder just before it would: waiting a
        # fixed time instead made the race depend on how fast the store answered (it lost on a loaded machine)
        deadline = time.monotonic() + 30  # never hang the suite if the claim never moves
        while holder(registry) != "2" and time.monotonic() < deadline:
            time.sleep(0.01)
        registry.set_registered_model_alias(NAME, ALIAS, "3")

    racer = threading.Thread(target=late_worse_move)
    racer.start()
    claim = versions.claim_alias(registry, NAME, ALIAS, "2", 0.3)
    racer.join()
    assert claim.promoted and claim.champion == "2" and str(claim.previous.version) == "1"
    assert holder(registry) == "2"


def test_a_better_version_moved_in_meanwhile_keeps_it(registry):
    registry.set_registered_model_alias(NAME, ALIAS, "1")

    def late_better_move():
        deadline = time.monotonic() + 30  # right after version 3's move (see the test above)
        while holder(registry) != "3" and time.monotonic() < deadline:
            time.sleep(0.01)
        registry.set_registered_model_alias(NAME, ALIAS, "2")

    racer = threading.Thread(target=late_better_move)
    racer.start()
    claim = versions.claim_alias(registry, NAME, ALIAS, "3", 0.45)  # beats version 1 (0.5), not version 2 (0.3)
    racer.join()
    assert not claim.promoted and claim.champion == "2"
    assert "version 2 took the alias meanwhile" in claim.reason
    assert holder(registry) == "2"
