"""The quality_vs_keras phase of benchmarks/run.py (run through phases.py in its own child process).

Test CER of ours vs the Keras IAM example, trained on the same words for the same wall-clock budget:
1. ours: steps.training.fit.fit exactly as the train step runs it (MLproject's train defaults, `epochs` from
   the benchmark mode, a fresh work directory so nothing resumes); its wall-clock seconds, from loading the
   data to the best-val-CER weights, are the budget;
2. theirs: the example's pipeline (keras_baseline.py) over the PNG files of the same train and val words and
   the example's model and set-up (keras_model.py), fit until the budget is spent (the clock starts before its
   pipeline is built) or its early stopping ends it;
3. both read the same test split (with the default writer split: fonts held out of training) greedily, and
   steps.evaluation.metrics.error_rates scores both against the dataset's texts.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

MAX_EPOCHS = 10_000  # theirs: the time budget or early stopping ends training, never the epoch count


def _cpu_seconds() -> float:
    """CPU seconds this process has used: on a shared machine, what each side's wall-clock budget bought."""
    t = os.times()
    return t.user + t.system


def phase_quality_vs_keras(args: dict) -> dict:
    import keras

    from steps.dataset import reader
    from steps.dataset.info import DatasetInfo

    info = DatasetInfo.load(args["data_dir"])
    references = {
        r["id"].decode(): r["text"].decode()
        for r in reader.records(info, "test").map(lambda ex: {"id": ex["id"], "text": ex["text"]}).as_numpy_iterator()
    }
    ours = _ours(args, info)
    keras.backend.clear_session()
    keras.utils.set_random_seed(ours["seed"])
    theirs = _theirs(args, ours["train_seconds"])
    predictions = {"ours": ours.pop("predictions"), "keras_example": theirs.pop("predictions")}
    ours.update(_score(references, predictions["ours"]))
    theirs.update(_score(references, predictions["keras_example"]))
    examples = [  # a few readings side by side, for a human look at what the figures mean
        {"id": i, "truth": references[i], **{k: p.get(i, "") for k, p in predictions.items()}}
        for i in sorted(references)[:10]
    ]
    return {
        "test_samples": len(references),
        "split_method": info.split_method,
        "ours": ours,
        "keras_example": theirs,
        "examples": examples,
    }


def _score(references: dict[str, str], predictions: dict[str, str]) -> dict:
    """CER/WER over every test word (a word with no prediction counts as read as "")."""
    from steps.evaluation import metrics

    ids = sorted(references)
    rates = metrics.error_rates([references[i] for i in ids], [predictions.get(i, "") for i in ids])
    return {"test_cer": rates["cer"], "test_wer": rates["wer"], "unpredicted": sum(i not in predictions for i in ids)}


def _ours(args: dict, info) -> dict:
    import tensorflow as tf

    from steps.dataset import reader
    from steps.inference import ctc, imaging
    from steps.training.fit import TrainConfig, fit
    from steps.workflow import config

    cfg = TrainConfig.from_params({**config.defaults("train"), "epochs": args["epochs"]})
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as work:
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        fitted = fit(args["data_dir"], Path(work), cfg)
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    characters = tf.constant(list(info.charset.characters))
    predictions = {}
    for batch in reader.records(info, "test").batch(64):
        texts, _ = ctc.decode(fitted.model(imaging.to_model_input(batch["image"]), training=False), characters)
        predictions.update(zip((i.decode() for i in batch["id"].numpy()), (t.decode() for t in texts.numpy())))
    return {
        "train_seconds": seconds,
        "train_cpu_seconds": cpu,
        "load_1min_after": os.getloadavg()[0],
        "epochs": len(fitted.history["val_cer"]),
        "stopped": fitted.stopped,
        "best_val_cer": min(fitted.history["val_cer"]),
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "seed": cfg.seed,
        "parameters": fitted.model.count_params(),
        "predictions": predictions,
    }


def _theirs(args: dict, budget_seconds: float) -> dict:
    import keras_baseline as kb
    import keras_model as km
    import tensorflow as tf

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    split = {s: kb.split_samples(args["data_dir"], args["raw_dir"], args["words_dir"], s) for s in ("train", "val")}
    _, train_paths, train_labels = split["train"]
    pipe = kb.KerasExamplePipeline(train_labels, batch_size=km.BATCH_SIZE)
    _, val_paths, val_labels = split["val"]
    keep = [i for i, label in enumerate(val_labels) if len(label) <= pipe.max_len]  # see keras_model's docstring
    train_ds = pipe.prepare_dataset(train_paths, train_labels)
    val_ds = pipe.prepare_dataset([val_paths[i] for i in keep], [val_labels[i] for i in keep])
    model = km.build_model(pipe.image_width, pipe.image_height, len(pipe.char_to_num.get_vocabulary()))
    stopping = km.early_stopping()
    budget = km.TimeBudget(t0 + budget_seconds, stopping)
    history = model.fit(train_ds, validation_data=val_ds, epochs=MAX_EPOCHS, callbacks=[stopping, budget], verbose=2)
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0

    ids, test_paths, _ = kb.split_samples(args["data_dir"], args["raw_dir"], args["words_dir"], "test")
    images = tf.data.Dataset.from_tensor_slices(test_paths).map(pipe.preprocess_image).batch(km.BATCH_SIZE)
    predict = km.prediction_model(model)
    vocabulary = pipe.char_to_num.get_vocabulary()
    texts = []
    for batch in images:
        texts += km.decode_batch_predictions(predict(batch, training=False).numpy(), vocabulary, pipe.max_len)
    return {
        "train_seconds": seconds,
        "train_cpu_seconds": cpu,
        "load_1min_after": os.getloadavg()[0],
        "budget_seconds": budget_seconds,
        "epochs": len(history.history["loss"]),  # the last one cut short when the budget ends it
        "stopped": "time budget"
        if budget.stopped_by_budget
        else f"early stopping (patience {stopping.patience})"
        if stopping.stopped_epoch
        else f"ran all {MAX_EPOCHS} epochs",
        "best_val_loss": float(min(history.history["val_loss"])),
        "val_words_left_out": len(val_labels) - len(keep),
        "batch_size": km.BATCH_SIZE,
        "learning_rate": 1e-3,
        "parameters": model.count_params(),
        "predictions": dict(zip(ids, texts)),
    }
