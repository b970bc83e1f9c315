"""Where does a training epoch go on this machine? The default model's step split into its parts, and the
epoch's other work (validation loss, validation decoding, callbacks), with the options that might cut them.

    python benchmarks/profiles/profile_train.py [--work-dir benchmarks/work] [--steps 30]

Needs the dataset benchmarks/run.py made (the newest benchmarks/work/data-*/dataset). Prints, per training
step of the default model (MLproject's train defaults) at its batch size, forward + backward of:
- the convolutional blocks alone (up to the features the recurrent layers read),
- the recogniser (conv + dense + BiLSTMs + output layer) with a dummy loss,
- the whole training step as fit runs it (both CTC heads, clipnorm, Adam), and the same with XLA
  (`jit_compile=True`);
and per epoch: the training steps, Keras' validation-loss pass, and EpochReport's validation decoding
(eager, as fit.py calls it, and inside one tf.function). Each figure is the median of three timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from harness import latest_data_root  # noqa: E402

from steps.workflow import config  # noqa: E402

for _name, _value in config.TRAINING_ENV.items():  # profile the step as the train step runs it
    os.environ.setdefault(_name, _value)


def median_ms(fn, n: int, repeats: int = 3) -> float:
    """Median over `repeats` of the mean milliseconds of `n` calls of fn (after one warm-up call)."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t0) / n * 1000)
    return statistics.median(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", type=Path, default=BENCH / "work")
    p.add_argument("--steps", type=int, default=30, help="training steps per timing")
    p.add_argument("--output", type=Path, help="also write the figures as JSON here")
    a = p.parse_args()

    import keras
    import tensorflow as tf

    from benchmarks.train_phases import train_config
    from steps.dataset.info import DatasetInfo
    from steps.inference import ctc
    from steps.training import inputs
    from steps.training import model as modelib

    cfg = train_config()
    info = DatasetInfo.load(str(latest_data_root(a.work_dir) / "dataset"))
    keras.utils.set_random_seed(cfg.seed)
    net, trainer = modelib.build_for_training(cfg.model, info.image_height, info.image_width, info.charset.size)
    train_ds = inputs.batches(info, "train", cfg.batch_size, training=cfg.augment, seed=cfg.seed)
    val_ds = inputs.batches(info, "val", cfg.batch_size)
    x, y = next(iter(train_ds))
    print(
        f"default model, batch {cfg.batch_size}, canvas {info.image_height}x{info.image_width}, "
        f"{net.count_params():,} parameters, {os.cpu_count()} cores",
        flush=True,
    )
    res: dict = {"batch_size": cfg.batch_size, "cores": os.cpu_count()}

    features = next(layer for layer in net.layers if layer.name == "dense").input
    conv = keras.Model(net.input, features)

    def grad_step(model):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                loss = tf.reduce_mean(tf.square(out))
            return tape.gradient(loss, model.trainable_variables)

        return step

    res["conv_fwd_bwd_ms"] = median_ms(grad_step(conv), a.steps)
    res["recogniser_fwd_bwd_ms"] = median_ms(grad_step(net), a.steps)
    targets = {"logits": y, "shortcut": y} if trainer is not net else y

    def compiled(jit: bool):
        keras.utils.set_random_seed(cfg.seed)
        n, t = modelib.build_for_training(cfg.model, info.image_height, info.image_width, info.charset.size)
        loss = {"logits": ctc.loss, "shortcut": ctc.loss} if t is not n else ctc.loss
        weights = {"logits": 1.0, "shortcut": cfg.model.shortcut} if t is not n else None
        t.compile(
            keras.optimizers.Adam(cfg.learning_rate, clipnorm=1.0), loss=loss, loss_weights=weights, jit_compile=jit
        )
        return t

    fitted = compiled(False)
    res["train_step_ms"] = median_ms(lambda: fitted.train_on_batch(x, targets), a.steps)
    try:
        xla = compiled(True)
        res["train_step_xla_ms"] = median_ms(lambda: xla.train_on_batch(x, targets), a.steps)
    except Exception as e:  # XLA may not compile CTC or the LSTM's while loop on this build
        res["train_step_xla_ms"] = None
        res["xla_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    print(json.dumps(res, indent=1), flush=True)

    # Per epoch: training alone, the validation-loss pass, the validation decoding as EpochReport does it.
    chars = tf.constant(list(info.charset.characters))
    fit_train = train_ds.map(lambda a_, b_: (a_, {"logits": b_, "shortcut": b_})) if trainer is not net else train_ds
    fit_val = val_ds.map(lambda a_, b_: (a_, {"logits": b_, "shortcut": b_})) if trainer is not net else val_ds
    fitted.fit(fit_train.take(2), epochs=1, verbose=0)  # traced

    def epoch():
        fitted.fit(fit_train, epochs=1, verbose=0)

    def val_loss():
        fitted.evaluate(fit_val, verbose=0)

    recogniser = fitted if trainer is net else keras.Model(fitted.input, fitted.outputs[0])

    def decode_eager():
        for images, _ in val_ds:
            ctc.decode(recogniser(images, training=False), chars)

    decode_graph_fn = tf.function(lambda images: ctc.decode(recogniser(images, training=False), chars))

    def decode_graph():
        for images, _ in val_ds:
            decode_graph_fn(images)

    per_epoch = {}
    for name, fn in (
        ("train", epoch),
        ("val_loss", val_loss),
        ("val_decode_eager", decode_eager),
        ("val_decode_graph", decode_graph),
    ):
        fn()  # warm
        times = []
        for _ in range(2 if name == "train" else 3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        per_epoch[name + "_seconds"] = round(statistics.median(times), 2)
        print(f"  {name}: {per_epoch[name + '_seconds']} s per epoch", flush=True)
    res["per_epoch"] = per_epoch
    res["train_images"] = info.samples["train"]
    res["val_images"] = info.samples["val"]
    print(json.dumps(res, indent=1))
    if a.output:
        a.output.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
