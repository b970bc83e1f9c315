"""TF_CONFIG read as a cluster, and the datasets a cluster refuses (the two-worker run itself is in
tests/scaleout/test_multiworker.py)."""

from __future__ import annotations

import pytest

from steps.dataset.info import DatasetInfo
from steps.training import cluster
from steps.training.errors import ConfigError


def test_a_cluster_needs_as_many_training_shards_as_workers():
    info = DatasetInfo(
        **_info_fields(shards={"train": 1, "val": 1, "test": 1}, samples={"train": 90, "val": 9, "test": 9})
    )
    with pytest.raises(
        ConfigError, match="2 workers need at least 2 training shards, the dataset has 1: .*shard_size=45"
    ):
        cluster.check_shards(info, cluster.Cluster(2, 0))


def _info_fields(**changes) -> dict:
    from steps.inference.charset import Charset

    fields = dict(
        data_dir="/nowhere",
        image_height=32,
        image_width=128,
        max_label_length=24,
        samples={},
        writers={},
        shards={},
        digest="",
        split_method="writer",
        charset=Charset(("a",)),
    )
    fields.update(changes)
    return fields


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", "TF_CONFIG is not a cluster spec"),
        (
            '{"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, "task": {"type": "chief", "index": 0}}',
            "list every machine as a worker",
        ),
        ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}', "index below 2"),
    ],
)
def test_a_tf_config_that_cannot_be_used_is_a_clear_error(tf_config, message):
    with pytest.raises(ConfigError, match=message):
        cluster.from_env({"TF_CONFIG": tf_config})


def test_one_worker_or_none_is_not_a_cluster():
    assert cluster.from_env({}) == cluster.Cluster(1, 0)
    one = '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}'
    assert cluster.from_env({"TF_CONFIG": one}) == cluster.Cluster(1, 0)
    two = '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}}'
    assert cluster.from_env({"TF_CONFIG": two}) == cluster.Cluster(2, 1)
