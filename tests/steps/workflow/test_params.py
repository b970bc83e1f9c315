"""steps.workflow.params: every value checked before any work, with a message naming the parameter and the fix."""

from __future__ import annotations

import pytest

import pipeline
from steps.workflow import chain, params


def _all(**user: str) -> dict[str, dict[str, object]]:
    routed = chain.route(user)
    return {step: params.effective(step, routed[step]) for step in chain.STEPS}


def test_the_defaults_pass():
    params.check(_all())


@pytest.mark.parametrize(
    "user, message",
    [
        (
            {"epochs": "-1"},
            "epochs=-1: epochs must be an integer >= 1; set -P epochs=<an integer >= 1>, e.g. -P epochs=21",
        ),
        ({"num_words": "0"}, "num_words=0: num_words must be an integer >= 1"),
        ({"batch_size": "abc"}, "batch_size=abc: batch_size must be an integer >= 1"),
        ({"learning_rate": "0"}, "learning_rate must be a number > 0"),
        ({"learning_rate": "nan"}, "learning_rate must be a number > 0"),
        ({"dropout": "1"}, "dropout must be a number >= 0 and < 1"),
        ({"augment": "maybe"}, "augment must be true or false"),
        ({"conv_filters": "32,x"}, "conv_filters must be comma-separated positive integers like 32,64"),
        ({"split": "form"}, "split must be one of writer, random"),
        ({"eval_split": "dev"}, "eval_split must be one of train, val, test"),
        ({"conv_filters": "32,64,128,128,256,256"}, "conv_filters has 6 blocks, each halving the height, too many"),
        ({"image_width": "16"}, "image_width=16 gives 4 time steps"),
        ({"width_pools": "5"}, "width_pools=5 exceeds the 4 conv blocks"),
        ({"level": "lines", "line_width": "64"}, "line_width=64 gives 16 time steps"),
        ({"level": "paragraphs"}, "level must be one of words, lines"),
        ({"train_ratio": "0.9", "val_ratio": "0.1"}, "leaves nothing for the test split"),
        ({"num_writers": "2"}, "num_writers=2 cannot fill 3 writer-independent splits: set -P num_writers=3"),
        ({"split": "random", "num_words": "5"}, "leaves the val split empty: set -P num_words=7 or more"),
        (
            {"num_words": "40", "batch_size": "64"},
            "batch_size=64 is larger than the about 30 training samples of num_words=40",
        ),
    ],
)
def test_each_bad_value_is_named_with_its_fix(user, message):
    with pytest.raises(params.ParamError) as e:
        params.check(_all(**user))
    assert message in str(e.value)


def test_a_split_size_rule_applies_to_the_synthetic_data_only():
    params.check(_all(dataset="iam", num_writers="1"))  # num_writers means nothing for IAM


def test_a_step_alone_checks_its_own_values_and_the_combinations_it_knows():
    params.check({"train": params.effective("train", {"conv_filters": "32,64,128,128,256,256"})})  # no canvas yet
    with pytest.raises(params.ParamError, match="epochs=0"):
        params.check({"train": params.effective("train", {"epochs": 0})})
    with pytest.raises(params.ParamError, match="leaves nothing for the test split"):
        params.check({"preprocess": params.effective("preprocess", {"train_ratio": 0.5, "val_ratio": 0.5})})


def test_main_refuses_a_bad_value_before_any_run(mlflow_store, capsys):
    assert pipeline.main(["--epochs", "-1"]) == 2
    assert "error: epochs=-1: epochs must be an integer >= 1" in capsys.readouterr().err
    assert mlflow_store.search_runs([mlflow_store.get_experiment_by_name("test").experiment_id]) == []


def test_a_step_alone_refuses_a_bad_value_in_one_line(mlflow_store):
    from click.testing import CliRunner

    from steps import download

    result = CliRunner().invoke(download.main, ["--num-words", "0"])
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == "Error: num_words=0: num_words must be an integer >= 1; set -P num_words=<an integer >= 1>, e.g. -P num_words=6000"
    )


def test_main_checks_only_what_it_declares_the_rest_reaches_the_steps():
    params.check({"main": {"rerun_from": "", "train_ratio": "0.75", "val_ratio": "0.15", "epochs": "3"}})
    with pytest.raises(params.ParamError, match="rerun_from must be one of"):
        params.check({"main": {"rerun_from": "training"}})
