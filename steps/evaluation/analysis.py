"""Scoring a model on a dataset split and analysing its errors; pure of MLflow (steps/evaluate.py logs).

Logits are computed once per batch by the exported model; greedy and beam decoding both use ctc.decode,
the function the exported model runs inside its graph.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import tensorflow as tf

from steps.dataset import reader
from steps.dataset.info import DatasetError, DatasetInfo
from steps.evaluation import metrics
from steps.inference import calibration, ctc
from steps.inference.recognizer import HandwritingModel
from steps.reports import plots

GRID_ROWS = 8  # samples per row of worst_and_best.png
RELIABILITY_BINS = 10  # equal-width confidence bins of the ECE and the reliability plot
LENGTH_BARS = 20  # at most this many bars in cer_by_length.png (lengths are grouped beyond)


def predict_split(
    recognizer: HandwritingModel,
    info: DatasetInfo,
    split: str,
    beam_width: int,
    batch_size: int = 64,
    lexicon: ctc.Lexicon | None = None,
) -> tuple[list[dict], float]:
    """Run the exported model over a split -> (one row per sample, mean CTC loss).

    Labels are encoded with the model's charset, whatever the dataset's: a sample holding characters the
    model cannot emit is still scored as it is (those characters count as errors) and its row lists them
    in `outside_charset`; the loss, which cannot be computed for it, is the mean over the other samples.
    """
    model_chars = recognizer.charset
    rows, losses = [], []
    for batch in reader.records(info, split).batch(batch_size):
        try:
            logits = recognizer.logits(batch["image"].numpy())  # as serve computes them (Lite or SavedModel)
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:
            raise DatasetError(
                f"the dataset's {info.image_height}x{info.image_width} canvases do not fit the model "
                f"({type(e).__name__}): preprocess with the image_height and image_width the model was trained on"
            ) from None
        truths = [t.decode() for t in batch["text"].numpy()]
        covered = [i for i, t in enumerate(truths) if model_chars.covers(t)]
        if covered:
            width = max(len(truths[i]) for i in covered)
            labels = np.zeros((len(covered), max(width, 1)), np.int32)
            for row, i in enumerate(covered):
                ids = model_chars.encode(truths[i])
                labels[row, : len(ids)] = ids
            losses.append(ctc.loss(tf.constant(labels), tf.gather(logits, covered)).numpy())
        greedy, greedy_conf = ctc.decode(logits, recognizer.characters)
        beam, beam_conf = ctc.decode(logits, recognizer.characters, beam_width) if beam_width else (greedy, greedy_conf)
        constrained = (
            ctc.decode_lexicon(logits, recognizer.characters, lexicon, max(beam_width, 10))[0] if lexicon else []
        )
        greedy_conf, beam_conf = recognizer.confidence(greedy_conf.numpy()), recognizer.confidence(beam_conf.numpy())
        for i, truth in enumerate(truths):
            pred = greedy[i].numpy().decode()
            rows.append(
                {
                    "id": batch["id"][i].numpy().decode(),
                    "writer": batch["writer"][i].numpy().decode(),
                    "truth": truth,
                    "prediction": pred,
                    "confidence": float(greedy_conf[i]),
                    "cer": metrics.edit_distance(truth, pred) / max(len(truth), 1),
                    "prediction_beam": beam[i].numpy().decode(),
                    "confidence_beam": float(beam_conf[i]),
                    "outside_charset": "".join(sorted(set(truth) - set(model_chars.characters))),
                    **({"prediction_lexicon": constrained[i]} if lexicon else {}),
                }
            )
    return rows, float(np.mean(np.concatenate(losses))) if losses else float("nan")


def outside_charset(rows: list[dict]) -> dict[str, int]:
    """Characters of the truths the model cannot emit -> in how many samples each occurs, most frequent first."""
    counts = Counter(c for r in rows for c in r["outside_charset"])
    return dict(counts.most_common())


def summarize(rows: list[dict]) -> dict[str, float]:
    truths = [r["truth"] for r in rows]
    greedy = metrics.error_rates(truths, [r["prediction"] for r in rows])
    beam = metrics.error_rates(truths, [r["prediction_beam"] for r in rows])
    lexicon = (
        metrics.error_rates(truths, [r["prediction_lexicon"] for r in rows])
        if rows and "prediction_lexicon" in rows[0]
        else None
    )
    confidence, correct = [r["confidence"] for r in rows], [r["truth"] == r["prediction"] for r in rows]
    return {
        "ece": calibration.expected_calibration_error(confidence, correct, RELIABILITY_BINS) if rows else float("nan"),
        **({"cer_lexicon": lexicon["cer"], "wer_lexicon": lexicon["wer"]} if lexicon else {}),
        "cer": greedy["cer"],
        "wer": greedy["wer"],
        "cer_beam": beam["cer"],
        "wer_beam": beam["wer"],
        "samples": len(rows),
        "samples_outside_charset": sum(bool(r["outside_charset"]) for r in rows),
        "characters": greedy["chars"],
        "exact_match": sum(r["truth"] == r["prediction"] for r in rows) / max(len(rows), 1),
    }


def worst_and_best(rows: list[dict], count: int = GRID_ROWS) -> tuple[list[dict], list[dict]]:
    """The `count` worst and `count` best samples, by one ranking and never the same sample twice.

    Worst: highest CER, then the longest word among equals (a misread word says more than a misread comma),
    then the most confident (a confident mistake is the one to see), then id. Best: lowest CER, then the
    longest word, then most confident, then id, from the samples not already shown as worst.
    """
    worst = sorted(rows, key=lambda r: (-r["cer"], -len(r["truth"]), -r["confidence"], r["id"]))[:count]
    shown = {r["id"] for r in worst}
    best = sorted(
        (r for r in rows if r["id"] not in shown), key=lambda r: (r["cer"], -len(r["truth"]), -r["confidence"], r["id"])
    )
    return worst, best[:count]


def cer_by_length(rows: list[dict], bars: int = LENGTH_BARS) -> tuple[list[str], list[float]]:
    """(labels, CER) per truth length, lengths grouped into ranges ("30-32") when more than `bars` would be
    needed (words span ~1-20 characters, lines 10-90); each CER is errors over characters in that group."""
    if not rows:
        return [], []
    lengths = [len(r["truth"]) for r in rows]
    low = min(lengths)
    width = math.ceil((max(lengths) - low + 1) / bars)
    groups: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for r, n in zip(rows, lengths):
        acc = groups[low + (n - low) // width * width]
        acc[0] += metrics.edit_distance(r["truth"], r["prediction"])
        acc[1] += n
    keys = sorted(groups)
    labels = [str(k) if width == 1 else f"{k}-{k + width - 1}" for k in keys]
    return labels, [groups[k][0] / max(groups[k][1], 1) for k in keys]


def error_plots(rows: list[dict], canvases: dict[str, np.ndarray], out: Path, unit: str = "word") -> None:
    """CER histogram, reliability diagram, CER by length, top confusions and the worst/best grid into `out`.

    `canvases` must hold the image of every sample worst_and_best(rows) picks; `unit` names a sample ("word",
    "line") in the plots' labels.
    """
    plots.histogram([r["cer"] for r in rows], out / "cer_histogram.png", f"per-{unit} CER", "CER")
    correct = [r["truth"] == r["prediction"] for r in rows]
    confidence = [r["confidence"] for r in rows]
    plots.reliability(
        calibration.reliability(confidence, correct, RELIABILITY_BINS),
        calibration.expected_calibration_error(confidence, correct, RELIABILITY_BINS),
        RELIABILITY_BINS,
        out / "reliability.png",
        unit,
    )
    confusions: Counter = Counter()
    for r in rows:
        confusions.update(f"{a or '∅'}→{b or '∅'}" for a, b in metrics.alignment(r["truth"], r["prediction"]) if a != b)
    labels, rates = cer_by_length(rows)
    plots.bars(labels, rates, out / "cer_by_length.png", f"CER by {unit} length", f"characters in the {unit}", "CER")
    top = confusions.most_common(20)
    plots.bars(
        [k for k, _ in top],
        [v for _, v in top],
        out / "confusions.png",
        "most frequent character errors (truth→prediction, ∅ = none)",
        "count",
        "",
        horizontal=True,
    )
    worst, best = worst_and_best(rows)
    missing = [r["id"] for r in worst + best if r["id"] not in canvases]
    assert not missing, f"no canvas for {missing}"
    caption = lambda r: f"{r['truth']} → {r['prediction'] or '∅'} ({r['cer']:.2f})"  # noqa: E731
    plots.image_rows(
        {
            f"worst {len(worst)}": [(canvases[r["id"]], caption(r)) for r in worst],
            f"best {len(best)}": [(canvases[r["id"]], caption(r)) for r in best],
        },
        out / "worst_and_best.png",
        "worst and best samples: truth → prediction (CER)",
    )


def wanted_ids(rows: list[dict]) -> set[str]:
    """Ids whose canvases error_plots needs."""
    worst, best = worst_and_best(rows)
    return {r["id"] for r in worst + best}
