"""The errors of the sources package: each message tells the user what to do."""

from __future__ import annotations


class DownloadError(Exception):
    """A download or archive problem; the message tells the user what to do."""


class CorruptArchive(DownloadError):
    """A truncated or corrupt archive: a cached copy of it must go, so that a rerun fetches it again."""


IAM_REGISTER_URL = "https://fki.tic.heia-fr.ch/register"


def auth_hint(sent: bool, withheld: str = "") -> str:
    """What a 401/403 means: credentials sent and refused, set but withheld (and why), or missing."""
    if sent:
        return "IAM_USER/IAM_PASSWORD were sent and refused: check them"
    if withheld:
        return f"IAM_USER/IAM_PASSWORD are set but were not sent: {withheld}"
    return (
        f"the official IAM archives need an account: register at {IAM_REGISTER_URL}, "
        "then set IAM_USER and IAM_PASSWORD in the environment"
    )


def describe(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__
