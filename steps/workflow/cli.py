"""What every step CLI shares: library errors become one-line click errors, in one place."""

from __future__ import annotations

import functools
from typing import Callable

import click


def user_errors(*types: type[BaseException]) -> Callable:
    """Decorate a click command so that the library errors `types` end it with their message alone.

    Library code raises its own specific errors and never click's; this is where they are translated.
    A parameter value that cannot work (params.ParamError, raised by runs.start_step) is one for every step.
    """
    from steps.workflow.params import ParamError

    types = (*types, ParamError)

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            try:
                return command(*args, **kwargs)
            except types as e:
                raise click.ClickException(str(e)) from None

        return wrapper

    return decorate


def model_uri_option(default: str) -> Callable:
    """The --model-uri option of serve and infer: '' means the registered model's champion."""
    from steps.workflow import config

    return click.option(
        "--model-uri",
        default=default,
        show_default=True,
        help=f"'' = {config.CHAMPION_URI}; or models:/Name/<version>, runs:/<run_id>/{config.MODEL_ARTIFACT}",
    )


def level_option(default: str) -> Callable:
    """The --level option of serve and infer: which level's champion an empty --model-uri means."""
    from steps.workflow import config

    return click.option(
        "--level",
        type=click.Choice(sorted(config.LEVELS)),
        default=default,
        show_default=True,
        help=f"with --model-uri '': words = {config.champion_uri('words')}, lines = {config.champion_uri('lines')}",
    )


def ints(text: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers (conv_filters=32,64), as a click value."""
    from steps.training.model import parse_ints

    try:
        return parse_ints(text)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
