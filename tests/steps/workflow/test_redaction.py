"""steps.workflow.redaction: what a log line or a stored parameter may show of a URL."""

from __future__ import annotations

import pytest

from steps.workflow.redaction import redact, redact_params


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://user:s3cret@fki.example/data/", "https://fki.example/data/"),
        ("https://fki.example/data/words.tgz?token=abc", "https://fki.example/data/words.tgz"),
        ("http://u:p@[::1]:8080/x.zip", "http://[::1]:8080/x.zip"),
        ("/data/IAM_Words.zip", "/data/IAM_Words.zip"),
        ("runs:/0123/raw", "runs:/0123/raw"),
    ],
)
def test_redact_strips_credentials_and_query_tokens(url, shown):
    assert redact(url) == shown


def test_redact_params_touches_only_urls():
    params = {"source": "https://user:s3cret@host/data/", "epochs": "3", "data": "runs:/abc/dataset"}
    shown = redact_params(params)
    assert shown == {"source": "https://host/data/", "epochs": "3", "data": "runs:/abc/dataset"}
    assert "s3cret" not in " ".join(shown.values())
