"""steps.workflow.cache: the cache stays under its bound, least recently used entries first, in-use ones kept."""

from __future__ import annotations

import os
import time

import pytest

from steps.workflow import cache, config, runs
from steps.workflow.params import ParamError


def _entry(path, size: int, age_hours: float) -> None:
    """A cache entry of `size` bytes last written `age_hours` ago."""
    path.mkdir(parents=True)
    (path / "data").write_bytes(b"x" * size)
    stamp = time.time() - age_hours * 3600
    for p in (path / "data", path):
        os.utime(p, (stamp, stamp))


def test_prune_removes_the_least_recently_used_entries_until_under_the_bound(tmp_path):
    _entry(tmp_path / "0a1b2c", 400, age_hours=30)  # a download
    _entry(tmp_path / "train" / "k1", 300, age_hours=20)  # resumable training state
    _entry(tmp_path / "artifacts" / "h1", 300, age_hours=10)  # a copied dataset
    _entry(tmp_path / "artifacts" / "h2", 300, age_hours=5)
    removed = cache.prune(tmp_path, max_bytes=700)
    assert removed == [tmp_path / "0a1b2c", tmp_path / "train" / "k1"]
    assert sorted(p.name for p in cache.entries(tmp_path)) == ["h1", "h2"]
    assert cache.prune(tmp_path, max_bytes=700) == []  # already under the bound


def test_an_entry_used_within_the_hour_is_never_removed(tmp_path):
    _entry(tmp_path / "old", 100, age_hours=48)
    _entry(tmp_path / "busy", 1000, age_hours=0.1)  # a download resuming now
    assert cache.prune(tmp_path, max_bytes=10) == [tmp_path / "old"]
    assert (tmp_path / "busy").is_dir()


def test_the_bound_is_read_from_the_environment_and_checked(monkeypatch):
    monkeypatch.delenv(cache.LIMIT_ENV, raising=False)
    assert cache.limit_bytes() == 50 * 2**30
    monkeypatch.setenv(cache.LIMIT_ENV, "0.5")
    assert cache.limit_bytes() == 2**29
    for bad in ("0", "-1", "lots"):
        monkeypatch.setenv(cache.LIMIT_ENV, bad)
        with pytest.raises(ValueError, match=cache.LIMIT_ENV):
            cache.limit_bytes()


def test_every_step_start_bounds_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HWR_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(cache.LIMIT_ENV, str(1000 / 2**30))
    _entry(tmp_path / "stale", 2000, age_hours=72)
    runs._bound_cache()
    assert not (tmp_path / "stale").exists()
    assert "least recently used" in capsys.readouterr().err
    monkeypatch.setenv(cache.LIMIT_ENV, "none")
    with pytest.raises(ParamError, match=cache.LIMIT_ENV):  # one line for the user, like any bad parameter
        runs._bound_cache()
    assert config.cache_dir() == tmp_path
