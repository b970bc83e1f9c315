"""How well the confidence is calibrated, on a trained model and its dataset: what train and evaluate do.

    python benchmarks/calibration.py <saved_model dir> <dataset dir> [--out DIR]

Loads the exported SavedModel (the `saved_model` artifact of a logged model) and the preprocess dataset it was
trained on, computes the raw score of every validation and test word with ctc.decode, fits the isotonic map
on the validation words (as train does) and prints the expected calibration error on the test words: of the
old score (the probability of the greedy path), of the raw weakest-frame score, and of the calibrated
confidence (what serve and infer now report). Then, per review threshold, the share of test words a human
would check and the accuracy of the words that would pass unchecked. Writes the reliability diagram of the
calibrated confidence to --out (default: the current directory) as reliability.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BINS = 10
THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9)


def scores(module, characters, info, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw weakest-frame score, old path probability, exactly right) per word of a split."""
    import tensorflow as tf

    from steps.dataset import reader
    from steps.inference import ctc

    raw, path, correct = [], [], []
    for batch in reader.records(info, split).batch(128):
        logits = module.logits(batch["image"])
        texts, score = ctc.decode(logits, characters)
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        path.extend(np.exp(tf.reduce_sum(tf.reduce_max(log_probs, -1), -1).numpy()).tolist())
        raw.extend(score.numpy().tolist())
        correct.extend(t == r for t, r in zip(texts.numpy(), batch["text"].numpy()))
    return np.array(raw), np.array(path), np.array(correct, bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("saved_model")
    parser.add_argument("dataset")
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    import tensorflow as tf

    from steps.dataset.info import DatasetInfo
    from steps.inference import imaging
    from steps.inference.calibration import expected_calibration_error, isotonic, reliability
    from steps.reports import plots

    imaging.tiff_op()  # the SavedModel's TIFF branch needs the op registered, as in recognizer.py
    module = tf.saved_model.load(args.saved_model)
    characters = module.charset()
    info = DatasetInfo.load(args.dataset)
    val_raw, _, val_ok = scores(module, characters, info, "val")
    test_raw, test_path, test_ok = scores(module, characters, info, "test")
    cal = isotonic(val_raw, val_ok)
    conf = cal(test_raw)
    print(f"validation: {len(val_ok)} words, {val_ok.mean():.3f} read exactly; map of {len(cal.scores)} knots")
    print(f"test: {len(test_ok)} words, {test_ok.mean():.3f} read exactly")
    for name, c in (("old path probability", test_path), ("weakest frame (raw)", test_raw), ("calibrated", conf)):
        print(f"  ECE {name:22s} {expected_calibration_error(c, test_ok, BINS):.3f}  (mean {c.mean():.3f})")
    print("review threshold: share of test words sent to a human, accuracy of the words kept")
    for t in THRESHOLDS:
        kept = conf >= t
        accuracy = test_ok[kept].mean() if kept.any() else float("nan")
        print(f"  {t:.1f}: {1 - kept.mean():.1%} reviewed, {accuracy:.3f} of the rest right ({kept.sum()} words)")
    out = Path(args.out) / "reliability.png"
    plots.reliability(reliability(conf, test_ok, BINS), expected_calibration_error(conf, test_ok, BINS), BINS, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
