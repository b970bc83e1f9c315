"""A concrete TensorFlow function run with all its kernels in the thread that calls it.

Called eagerly, a function runs its kernels on TensorFlow's inter-op thread pool while the calling thread
waits: of preprocessing four word images (1.07 ms), 0.13 ms ran in the caller's own thread. In serve, whose
one model-call thread does all the computing, that is a hand-over to another thread and back per call, and
on a busy machine the pool's thread also waits for a core. A TF1-style Session whose ConfigProto asks for
inter_op_parallelism_threads < 0 runs its graph's kernels in the caller's thread (what a negative value
means there); the graph is the function itself, so the outputs are the same bytes (tests compare them).
Served at concurrency 8 on 2 cores: 752 against 646 images/s in alternating rounds (README, "Performance",
session 20). Large batches on many cores are another matter: the pool runs their images side by side, so
only serve asks for this (HandwritingModel.preprocess_in_calling_thread).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf


class InlineFunction:
    """`function` (a ConcreteFunction that captures nothing) as a callable: NumPy values (bytes, lists of bytes,
    arrays) in, NumPy out in the function's output structure, errors as TensorFlow raises them. Thread-safe."""

    def __init__(self, function: tf.types.experimental.ConcreteFunction, intra_op_threads: int = 1):
        if function.captured_inputs:  # variables or tensors of the eager context: a new graph cannot hold them
            raise ValueError(f"{function.name} captures {len(function.captured_inputs)} inputs: it cannot run inline")
        graph = tf.Graph()
        with graph.as_default():
            specs = tf.nest.flatten(function.structured_input_signature)
            inputs = [tf.compat.v1.placeholder(spec.dtype, spec.shape) for spec in specs]
            outputs = function(*inputs)
        config = tf.compat.v1.ConfigProto(
            inter_op_parallelism_threads=-1, intra_op_parallelism_threads=intra_op_threads
        )
        self._session = tf.compat.v1.Session(graph=graph, config=config)
        self._run = self._session.make_callable(outputs, inputs)

    def __call__(self, *values: Any) -> Any:
        return self._run(*values)
