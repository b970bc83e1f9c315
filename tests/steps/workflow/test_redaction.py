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


def test_split_credentials_keeps_the_query_and_unquotes_the_password():
    from steps.workflow.redaction import split_credentials

    assert split_credentials("https://me:p%40ss@host:8443/data/?v=2") == ("https://host:8443/data/?v=2", ("me", "p@ss"))
    assert split_credentials("https://host/data/") == ("https://host/data/", None)
    assert split_credentials("/local/IAM_Words.zip") == ("/local/IAM_Words.zip", None)


def test_move_credentials_takes_them_out_of_the_params_into_the_env_names():
    from steps.workflow.redaction import move_credentials

    params, env = move_credentials({"source": "https://me:pw@host/x.zip", "epochs": "3"})
    assert params == {"source": "https://host/x.zip", "epochs": "3"}
    assert env == {"IAM_USER": "me", "IAM_PASSWORD": "pw"}
