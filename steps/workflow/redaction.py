"""Credentials never reach logs, params or artifacts: URLs are shown without user:password@ or query tokens,
and credentials typed into a URL are moved to the environment variables the download step reads."""

from __future__ import annotations

import os
import urllib.parse
from typing import Mapping

# The one way credentials reach the download step (never a parameter, so never stored by MLflow).
USER_ENV, PASSWORD_ENV = "IAM_USER", "IAM_PASSWORD"
# Basic auth goes over HTTPS only, except to the host named here (a local mirror over http, a test server).
AUTH_HOST_ENV = "IAM_AUTH_HOST"


def _netloc(parts: urllib.parse.SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return host + (f":{parts.port}" if parts.port else "")


def redact(url: str, keep_query: bool = False) -> str:
    """The URL without user:password@ and, unless keep_query, without the query (it may hold tokens)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https", "ftp", "file") or not parts.netloc:
        return url
    return urllib.parse.urlunsplit((parts.scheme, _netloc(parts), parts.path, parts.query if keep_query else "", ""))


def redact_params(params: Mapping[str, str]) -> dict[str, str]:
    """Every value that is a URL, redacted (what a log line may show of a step's parameters)."""
    return {k: redact(v) if "://" in str(v) else v for k, v in params.items()}


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """`https://user:pw@host/x?q` -> (`https://host/x?q`, (user, pw)); a URL without user info is unchanged."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.username:
        return url, None
    clean = urllib.parse.urlunsplit((parts.scheme, _netloc(parts), parts.path, parts.query, parts.fragment))
    return clean, (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))


def move_credentials(params: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(params with user info stripped from every URL, {IAM_USER, IAM_PASSWORD} taken from it or {})."""
    clean, env = {}, {}
    for k, v in params.items():
        clean[k], found = split_credentials(v) if "://" in str(v) else (v, None)
        if found:
            env = {USER_ENV: found[0], PASSWORD_ENV: found[1]}
    return clean, env


def env_credentials() -> tuple[str, str] | None:
    """(IAM_USER, IAM_PASSWORD) from the environment, or None; ValueError when only one is set."""
    user, password = os.environ.get(USER_ENV, ""), os.environ.get(PASSWORD_ENV, "")
    if bool(user) != bool(password):
        raise ValueError(f"set both {USER_ENV} and {PASSWORD_ENV} (or neither)")
    return (user, password) if user else None


STORED_WARNING = (
    "warning: the {name} URL holds credentials, and `mlflow run` stored every -P value as a param of run {run} "
    "before this step started: they are used but never stored or shown again here. Delete that run "
    f"(`mlflow runs delete --run-id {{run}}`, then `mlflow gc`) and pass credentials as {USER_ENV}/{PASSWORD_ENV}."
)
