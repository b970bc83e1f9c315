"""Step `evaluate`: measure a logged model on a dataset split, honestly.

Inputs:  `model_uri` (runs:/, models:/, m-...; "" = the model of the newest finished train run),
         `data` (a preprocess run's dataset/; "" = the dataset the model was trained on),
         `eval_split` (test), `beam_width`. The dataset may come from another source with another charset:
         labels are encoded with the model's charset, and samples holding characters the model cannot emit
         are scored as they are (those characters are errors) and counted.
Outputs: metrics test_loss, test_cer, test_wer (greedy) and test_cer_beam, test_wer_beam, test_ece
         (expected calibration error of the confidence against exact-word correctness, 10 bins),
         test_samples_outside_charset, linked to the logged model; predictions.parquet (id, writer, truth,
         prediction, confidence, per-sample CER, beam prediction, characters outside the model's charset);
         charset_report.json (how many samples hold which characters the model cannot emit); plots:
         reliability diagram (reliability.png), CER histogram, CER by word length, character confusions,
         and the worst and best samples. CER = sum of edit distances / sum of reference characters.

    mlflow run . -e evaluate --env-manager local -P model_uri=runs:/<train_run>/handwriting_recognition_model
    mlflow run . -e evaluate --env-manager local -P model_uri=models:/HandwritingRecognitionModel@champion \
        -P data=runs:/<preprocess_run_of_other_data>/dataset
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click
import mlflow

from steps.dataset.info import DatasetError
from steps.workflow import artifacts, cli, config, runs

D = config.defaults("evaluate")


class NoTrainingData(LookupError):
    """The model does not say which dataset it was trained on."""


@click.command(help=__doc__.split("\n\n")[0])
@click.option(
    "--model-uri", default=D["model_uri"], show_default=True, help="'' = the model of the newest finished train run"
)
@click.option("--data", default=D["data"], show_default=True, help="'' = the dataset the model was trained on")
@click.option("--eval-split", "split", type=click.Choice(config.SPLITS), default=D["eval_split"], show_default=True)
@click.option(
    "--beam-width",
    type=click.IntRange(0, 1000),
    default=D["beam_width"],
    show_default=True,
    help="0 = greedy decoding only",
)
@click.option(
    "--lexicon",
    default=D["lexicon"],
    show_default=True,
    help="a word list (one per line): also score lexicon-constrained decoding ('' = off)",
)
@cli.user_errors(artifacts.ArtifactError, runs.UpstreamNotFound, DatasetError, LookupError, ValueError)
def main(model_uri: str, data: str, split: str, beam_width: int, lexicon: str) -> None:
    params = {"model_uri": model_uri, "data": data, "eval_split": split, "beam_width": beam_width, "lexicon": lexicon}
    with runs.start_step("evaluate", params):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from steps.dataset import reader
        from steps.dataset.info import DatasetInfo
        from steps.evaluation import analysis
        from steps.inference import ctc, loading

        model_uri = runs.upstream_uri(model_uri, "train", config.MODEL_ARTIFACT)
        recognizer = loading.load(model_uri)
        info = mlflow.models.get_model_info(model_uri)
        if not data:
            data = mlflow.get_run(info.run_id).data.tags.get("hwr.data", "") if info.run_id else ""
            if not data:
                raise NoTrainingData(f"cannot tell which dataset {model_uri} was trained on: pass -P data=<URI>")
            runs.log(f"evaluating on {data} (the model's training data), split {split}")
        dataset = DatasetInfo.load(artifacts.readable_dir(data))
        unit = config.LEVELS[dataset.level].unit
        if dataset.charset != recognizer.charset:
            runs.log(
                f"the dataset's charset ({dataset.charset_size} characters) is not the model's "
                f"({len(recognizer.charset.characters)}): labels are encoded with the model's"
            )
        words = ctc.Lexicon.load(lexicon) if lexicon else None  # relative paths: from the project dir
        rows, loss = analysis.predict_split(recognizer, dataset, split, beam_width, lexicon=words)
        if not rows:
            raise DatasetError(f"the {split} split of {data} is empty")
        summary = analysis.summarize(rows)
        metrics = {
            f"{split}_loss": loss,
            f"{split}_cer": summary["cer"],
            f"{split}_wer": summary["wer"],
            f"{split}_cer_beam": summary["cer_beam"],
            f"{split}_wer_beam": summary["wer_beam"],
            f"{split}_exact_match": summary["exact_match"],
            f"{split}_ece": summary["ece"],
            f"{split}_samples": summary["samples"],
            f"{split}_samples_outside_charset": summary["samples_outside_charset"],
            **{f"{split}_{k}": summary[k] for k in ("cer_lexicon", "wer_lexicon") if k in summary},
        }
        mlflow.log_metrics(metrics, model_id=info.model_id)
        mlflow.set_tags(
            {
                "hwr.model_uri": model_uri,
                "hwr.dataset_digest": dataset.digest,
                "hwr.data": data,
                "hwr.train_run": info.run_id or "",
            }
        )
        outside = analysis.outside_charset(rows)
        with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
            out = Path(tmp)
            report = {
                "model_characters": len(recognizer.charset.characters),
                "dataset_characters": dataset.charset_size,
                "samples": summary["samples"],
                "samples_outside_charset": summary["samples_outside_charset"],
                "characters_outside_charset": outside,
            }
            (out / "charset_report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1))
            pq.write_table(pa.Table.from_pylist(rows), out / config.PREDICTIONS_FILE)
            wanted = analysis.wanted_ids(rows)
            canvases = {
                ex["id"].decode(): ex["image"]
                for ex in reader.single_pass(reader.records(dataset, split)).as_numpy_iterator()
                if ex["id"].decode() in wanted
            }
            analysis.error_plots(rows, canvases, out, unit)
            mlflow.log_artifacts(tmp)
        runs.log(
            f"{split}: CER {summary['cer']:.4f} (beam {summary['cer_beam']:.4f}), WER {summary['wer']:.4f}, "
            f"loss {loss:.3f}, ECE {summary['ece']:.3f} over {summary['samples']} {unit}s"
            + (f"; with the lexicon CER {summary['cer_lexicon']:.4f}" if "cer_lexicon" in summary else "")
            + (
                f"; {summary['samples_outside_charset']} of them hold characters the model cannot emit "
                f"(scored as errors): {''.join(outside)}"
                if outside
                else ""
            )
        )


if __name__ == "__main__":
    main()
