"""Training on several machines: the cluster TF_CONFIG names, the strategy it asks for, each worker's data.

With two or more workers in TF_CONFIG, `train` runs under MultiWorkerMirroredStrategy: one replica per worker,
gradients all-reduced every step, so every worker holds the same weights. Each worker reads its own training
shards (files i, i + n, ... of the split: a split needs at least as many shards as workers) through a dataset
distributed by function, because tf.data's auto-sharding cannot shard the augmenting reader (its seed stream
is zipped beside the files). Every worker validates on the whole validation split, so early stopping and the
learning-rate schedule take the same decisions everywhere. Only the chief (worker 0) logs the run and the model.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable, Mapping

import tensorflow as tf

from steps.dataset.info import DatasetInfo
from steps.training.errors import ConfigError


@dataclass(frozen=True)
class Cluster:
    workers: int  # 1: not a cluster
    index: int  # this process's place in TF_CONFIG's worker list; 0 is the chief

    @property
    def chief(self) -> bool:
        return self.index == 0


def from_env(environ: Mapping[str, str] = os.environ) -> Cluster:
    """The cluster of TF_CONFIG (`{"cluster": {"worker": [host:port, ...]}, "task": {"type": "worker", "index": i}}`);
    ConfigError when it cannot be used as it is."""
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return Cluster(1, 0)
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
        workers = list(cluster.get("worker", []))
    except (json.JSONDecodeError, AttributeError, TypeError) as e:
        raise ConfigError(f"TF_CONFIG is not a cluster spec ({e}): see the README's multi-worker training") from None
    if set(cluster) - {"worker"}:
        raise ConfigError(
            f"TF_CONFIG names {sorted(set(cluster) - {'worker'})} jobs: list every machine as a worker "
            "(worker 0 is the chief)"
        )
    if len(workers) <= 1:
        return Cluster(1, 0)
    index = task.get("index")
    if task.get("type") != "worker" or not isinstance(index, int) or not 0 <= index < len(workers):
        raise ConfigError(
            f"TF_CONFIG's task must be a worker with an index below {len(workers)}, got {json.dumps(task)}"
        )
    return Cluster(len(workers), index)


def strategy(cluster: Cluster) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy for a cluster, MirroredStrategy over several GPUs, else the default strategy."""
    if cluster.workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def check_shards(info: DatasetInfo, cluster: Cluster) -> None:
    """ConfigError unless every worker has training shards of its own."""
    shards = info.shards.get("train", 0)
    if shards < cluster.workers:
        most = max(1, math.floor(info.samples["train"] / cluster.workers))
        raise ConfigError(
            f"{cluster.workers} workers need at least {cluster.workers} training shards, the dataset has {shards}: "
            f"preprocess with -P shard_size={most} or smaller"
        )


def worker_batches(
    dist: tf.distribute.Strategy,
    make: Callable[[int, tuple[int, int]], tf.data.Dataset],
    global_batch: int,
) -> tf.distribute.DistributedDataset:
    """The training stream of every worker: `make(per-replica batch, (worker, workers))`, repeated (fit counts
    the steps of an epoch, as the shards of two workers need not hold the same number of samples)."""

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        shard = (context.input_pipeline_id, context.num_input_pipelines)
        return make(context.get_per_replica_batch_size(global_batch), shard).repeat()

    return dist.distribute_datasets_from_function(per_worker)


def patch_keras_fit(trainer, dist: tf.distribute.Strategy) -> None:
    """Work around Keras 3's fit under MultiWorkerMirroredStrategy (keras-team/keras#20585, Keras 3.15 here):

    - its symbolic build averages a distributed data batch across workers, which the collective ops refuse for
      a nested batch: `trainer` is built from this worker's own batch instead (shapes are all it needs);
    - its per-step logs are averaged with `axis=0`, which fails on the scalar loss: they are averaged across
      workers without an axis (so the logged loss is the mean over every worker's batch).

    The gradients are all-reduced by the strategy as usual; only the build and the logged figures are touched.
    """
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    distributed = tf.distribute.DistributedValues

    def local(v):
        return dist.experimental_local_results(v)[0] if isinstance(v, distributed) else v

    def build_from_local_batch(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = local(batch) if isinstance(batch, distributed) else tree.map_structure(local, batch)
                break
        with dist.scope():
            trainer._symbolic_build(data_batch=data_batch)

    trainer._maybe_symbolic_build = build_from_local_batch
    if getattr(tf_trainer.reduce_per_replica, "hwr_patched", False):
        return
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None) if isinstance(v, distributed) else v, values
            )
        return original(values, strategy, reduction)

    reduce_per_replica.hwr_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica
