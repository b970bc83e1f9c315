"""Step `evaluate`: measure a logged model on a dataset split, honestly.

Inputs:  `model_uri` (runs:/, models:/, m-...; "" = the model of the newest finished train run),
         `data` (a preprocess run's dataset/; "" = the dataset the model was trained on),
         `eval_split` (test), `beam_width`.
Outputs: metrics test_loss, test_cer, test_wer (greedy) and test_cer_beam, test_wer_beam, linked to
         the logged model; predictions.parquet (id, writer, truth, prediction, confidence, per-sample
         CER, beam prediction); plots: CER histogram, CER by word length, character confusions, and
         the worst and best samples. CER = sum of edit distances / sum of reference characters.

    mlflow run . -e evaluate --env-manager local -P model_uri=runs:/<train_run>/handwriting_recognition_model
"""
from __future__ import annotations

import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import click
import mlflow

from steps import config, tracking

D = config.defaults("evaluate")


def predict_split(recognizer, data_dir: str, split: str, beam_width: int, batch_size: int = 64) -> tuple[list[dict], float]:
    """Run the exported model over a split -> (one row per sample, mean CTC loss).

    Logits are computed once per batch by the exported model; greedy and beam decoding both use
    ctc.decode, the function the exported model runs inside its graph.
    """
    import tensorflow as tf

    from steps import ctc, data as datalib, model as modelib

    meta = datalib.stats(data_dir)
    chars = datalib.charset(data_dir)
    if chars != recognizer.charset:
        raise click.ClickException("the dataset's charset differs from the model's: evaluate on the data the model "
                                   "was trained for (or a dataset preprocessed with the same charset)")
    encode = datalib.label_encoder(chars, meta["max_label_length"])
    rows, losses = [], []
    for batch in datalib.records(data_dir, split).batch(batch_size):
        logits = recognizer.module.logits(batch["image"])
        labels = tf.map_fn(encode, batch["text"], fn_output_signature=tf.TensorSpec([meta["max_label_length"]], tf.int32))
        losses.append(modelib.ctc_loss(labels, logits).numpy())
        greedy, greedy_conf = ctc.decode(logits, recognizer.characters)
        beam, beam_conf = ctc.decode(logits, recognizer.characters, beam_width) if beam_width else (greedy, greedy_conf)
        for i in range(len(greedy)):
            truth, pred = batch["text"][i].numpy().decode(), greedy[i].numpy().decode()
            rows.append({"id": batch["id"][i].numpy().decode(), "writer": batch["writer"][i].numpy().decode(),
                         "truth": truth, "prediction": pred, "confidence": float(greedy_conf[i]),
                         "cer": ctc.edit_distance(truth, pred) / max(len(truth), 1),
                         "prediction_beam": beam[i].numpy().decode(), "confidence_beam": float(beam_conf[i])})
    import numpy as np

    return rows, float(np.mean(np.concatenate(losses))) if losses else float("nan")


def summarize(rows: list[dict]) -> dict[str, float]:
    from steps import ctc

    truths = [r["truth"] for r in rows]
    greedy = ctc.error_rates(truths, [r["prediction"] for r in rows])
    beam = ctc.error_rates(truths, [r["prediction_beam"] for r in rows])
    return {"cer": greedy["cer"], "wer": greedy["wer"], "cer_beam": beam["cer"], "wer_beam": beam["wer"],
            "samples": len(rows), "characters": greedy["chars"],
            "exact_match": sum(r["truth"] == r["prediction"] for r in rows) / max(len(rows), 1)}


def error_plots(rows: list[dict], canvases: dict[str, object], out: Path) -> None:
    """CER histogram, CER by word length, top confusions, worst/best grid into `out`."""
    from steps import ctc, plots

    plots.histogram([r["cer"] for r in rows], out / "cer_histogram.png", "per-word CER", "CER")
    by_length: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    confusions: Counter = Counter()
    for r in rows:
        acc = by_length[len(r["truth"])]
        acc[0] += ctc.edit_distance(r["truth"], r["prediction"])
        acc[1] += len(r["truth"])
        confusions.update(f"{a or '∅'}→{b or '∅'}" for a, b in ctc.alignment(r["truth"], r["prediction"]) if a != b)
    lengths = sorted(by_length)
    plots.bars([str(n) for n in lengths], [by_length[n][0] / max(by_length[n][1], 1) for n in lengths],
               out / "cer_by_length.png", "CER by word length", "characters in word", "CER")
    top = confusions.most_common(20)
    plots.bars([k for k, _ in top], [v for _, v in top], out / "confusions.png",
               "most frequent character errors (truth→prediction, ∅ = none)", "count", "", horizontal=True)
    ranked = sorted(rows, key=lambda r: (r["cer"], -r["confidence"]))
    chosen = ranked[-8:][::-1] + ranked[:8]
    plots.image_grid([(canvases[r["id"]], f"{r['truth']} → {r['prediction']}") for r in chosen if r["id"] in canvases],
                     out / "worst_and_best.png", "worst 8 (top) and best 8 (bottom): truth → prediction")


def resolve_model(model_uri: str) -> str:
    return model_uri or tracking.upstream_uri("", "train", config.MODEL_ARTIFACT)


@click.command()
@click.option("--model-uri", default=D["model_uri"], help="'' = the model of the newest finished train run")
@click.option("--data", default=D["data"], help="'' = the dataset the model was trained on")
@click.option("--eval-split", "split", type=click.Choice(config.SPLITS), default=D["eval_split"])
@click.option("--beam-width", type=click.IntRange(0, 1000), default=D["beam_width"])
def main(model_uri: str, data: str, split: str, beam_width: int) -> None:
    with tracking.start_step("evaluate", {"model_uri": model_uri, "data": data, "eval_split": split,
                                          "beam_width": beam_width}):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from steps import data as datalib, exported

        model_uri = resolve_model(model_uri)
        try:
            info = mlflow.models.get_model_info(model_uri)
            recognizer = exported.load(model_uri)
        except (LookupError, mlflow.exceptions.MlflowException, OSError) as e:
            raise click.ClickException(f"cannot load model {model_uri!r}: {e}") from None
        if not data:
            data = mlflow.get_run(info.run_id).data.tags.get("hwr.data", "") if info.run_id else ""
            if not data:
                raise click.ClickException(f"cannot tell which dataset {model_uri} was trained on: pass -P data=<URI>")
            tracking.log(f"evaluating on {data} (the model's training data), split {split}")
        data_dir = tracking.readable_dir(data)
        try:
            meta = datalib.stats(data_dir)
            rows, loss = predict_split(recognizer, data_dir, split, beam_width)
        except datalib.DatasetError as e:
            raise click.ClickException(str(e)) from None
        if not rows:
            raise click.ClickException(f"the {split} split of {data} is empty")
        summary = summarize(rows)
        metrics = {f"{split}_loss": loss, f"{split}_cer": summary["cer"], f"{split}_wer": summary["wer"],
                   f"{split}_cer_beam": summary["cer_beam"], f"{split}_wer_beam": summary["wer_beam"],
                   f"{split}_exact_match": summary["exact_match"], f"{split}_samples": summary["samples"]}
        mlflow.log_metrics(metrics, model_id=info.model_id)
        mlflow.set_tags({"hwr.model_uri": model_uri, "hwr.dataset_digest": meta["digest"], "hwr.data": data,
                         "hwr.train_run": info.run_id or ""})
        with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
            out = Path(tmp)
            pq.write_table(pa.Table.from_pylist(rows), out / config.PREDICTIONS_FILE)
            wanted = {r["id"] for r in sorted(rows, key=lambda r: r["cer"])[:8]} | \
                     {r["id"] for r in sorted(rows, key=lambda r: -r["cer"])[:8]}
            canvases = {ex["id"].decode(): ex["image"] for ex in datalib.records(data_dir, split).as_numpy_iterator()
                        if ex["id"].decode() in wanted}
            error_plots(rows, canvases, out)
            mlflow.log_artifacts(tmp)
        tracking.log(f"{split}: CER {summary['cer']:.4f} (beam {summary['cer_beam']:.4f}), WER {summary['wer']:.4f}, "
                     f"loss {loss:.3f} over {summary['samples']} words")


if __name__ == "__main__":
    main()
