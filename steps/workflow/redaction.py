"""Credentials never reach logs, params or artifacts: URLs are shown without user:password@ or query tokens."""

from __future__ import annotations

import urllib.parse


def redact(url: str, keep_query: bool = False) -> str:
    """The URL without user:password@ and, unless keep_query, without the query (it may hold tokens)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https", "ftp", "file") or not parts.netloc:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query if keep_query else "", ""))


def redact_params(params: dict[str, str]) -> dict[str, str]:
    """Every value that is a URL, redacted (what a log line may show of a step's parameters)."""
    return {k: redact(v) if "://" in v else v for k, v in params.items()}
