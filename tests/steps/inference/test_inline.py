"""steps.inference.inline: a concrete function run in the calling thread gives what it gives eagerly."""

import threading

import numpy as np
import pytest
import tensorflow as tf

from steps.inference.inline import InlineFunction


def _thread_of_the_kernels():
    seen: list[int] = []

    def note() -> float:
        seen.append(threading.get_ident())
        return 0.0

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def f(x):
        return x * 2.0 + tf.py_function(note, [], tf.float32)

    return f.get_concrete_function(), seen


def test_the_kernels_run_in_each_calling_thread():
    function, seen = _thread_of_the_kernels()
    inline = InlineFunction(function)
    callers = []

    def call():
        callers.append(threading.get_ident())
        np.testing.assert_array_equal(inline(np.array([1.0, 2.0], np.float32)), [2.0, 4.0])

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    call()
    assert sorted(seen) == sorted(callers) and len(set(seen)) == 3


def test_outputs_and_errors_are_the_eager_ones():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def decode(images):
        pixels = tf.map_fn(lambda b: tf.io.decode_png(b, channels=1), images, fn_output_signature=tf.uint8)
        return pixels, tf.reduce_sum(tf.cast(pixels, tf.int32))

    png = tf.io.encode_png(tf.constant([[[0], [255]], [[7], [9]]], tf.uint8)).numpy()
    function = decode.get_concrete_function()
    inline = InlineFunction(function)
    pixels, total = inline([png, png])
    eager = function(tf.constant([png, png]))
    np.testing.assert_array_equal(pixels, eager[0].numpy())
    assert total == eager[1].numpy() == 2 * 271
    with pytest.raises(tf.errors.InvalidArgumentError):
        inline([png[:20]])


def test_a_function_that_captures_a_variable_is_refused():
    v = tf.Variable(1.0)
    f = tf.function(lambda x: x * v, input_signature=[tf.TensorSpec([], tf.float32)]).get_concrete_function()
    with pytest.raises(ValueError, match="captures 1 inputs"):
        InlineFunction(f)
