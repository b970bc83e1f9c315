"""Quality over seeds: the README's main command, run as a new user runs it, once per seed, in fresh stores.

    python benchmarks/quality.py                      # seeds 1 2 3, default parameters
    python benchmarks/quality.py --seeds 1 2 3 4 5 -P epochs=20 -P lexicon=data/words/english.txt

Each seed is one `mlflow run . -e main --env-manager local -P seed=<s> [-P ...]` in its own temporary
tracking store and cache: the seed reaches download (which words and writers), preprocess (which hands are
held out: the synthetic split is font-held-out) and train (initialisation and augmentation). The figure is
the test CER on hands (font families) never seen in training, greedy, beam and (with -P lexicon=...)
lexicon-constrained; printed as mean, sample standard deviation and range over the seeds, with the wall time
of each run, and written to benchmarks/quality.json with the machine facts and load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

FIGURES = ("test_cer", "test_cer_beam", "test_cer_lexicon", "test_wer", "test_samples")


def run_seed(seed: int, params: list[str], workdir: Path) -> dict:
    """One main run in a fresh store -> its test figures, the held-out hands and the seconds it took."""
    from mlflow.tracking import MlflowClient

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    env.update(MLFLOW_TRACKING_URI=uri, HWR_CACHE_DIR=str(workdir / "cache"))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "run",
        ".",
        "-e",
        "main",
        "--env-manager",
        "local",
        "-P",
        f"seed={seed}",
        *[a for p in params for a in ("-P", p)],
    ]
    start = time.monotonic()
    proc = subprocess.run(command, cwd=harness.REPO, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    (workdir / "main.log").write_text(proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"seed {seed}: main failed (log in {workdir / 'main.log'}):\n{proc.stderr[-2000:]}")
    client = MlflowClient(uri)
    (parent,) = client.search_runs(["0"], "tags.`hwr.step` = 'main'")
    tags = parent.data.tags
    evaluation = client.get_run(tags["hwr.evaluate_run"]).data.metrics
    preprocess = client.get_run(tags["hwr.preprocess_run"]).data.metrics
    train = client.get_run(tags["hwr.train_run"]).data.metrics
    return {
        "seed": seed,
        "seconds": round(seconds, 1),
        **{k: evaluation[k] for k in FIGURES if k in evaluation},
        "test_hands": int(preprocess.get("writers_test", 0)),
        "train_hands": int(preprocess.get("writers_train", 0)),
        "epochs_run": int(train.get("epochs_run", 0)),
        "best_val_cer": train.get("best_val_cer"),
        # the served network's weights: int8 when they read validation as well as float ones (train's check)
        **{k: train[k] for k in ("lite_float_check_cer", "lite_int8_check_cer") if k in train},
        "decision": tags.get("hwr.decision"),
    }


def spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("-P", dest="params", action="append", default=[], help="name=value passed to main")
    parser.add_argument("--output", type=Path, default=harness.HERE / "quality.json")
    parser.add_argument("--keep", action="store_true", help="keep each seed's store (printed) for mlflow ui")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    runs = []
    for seed in args.seeds:
        workdir = Path(tempfile.mkdtemp(prefix=f"hwr-quality-{seed}-"))
        harness.log(f"seed {seed}: mlflow run . -e main -P seed={seed} {' '.join('-P ' + p for p in args.params)}")
        result = run_seed(seed, args.params, workdir)
        harness.log(f"seed {seed}: {json.dumps(result)}" + (f" (store {workdir})" if args.keep else ""))
        runs.append(result)
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        k: spread([r[k] for r in runs])
        for k in ("test_cer", "test_cer_beam", "test_cer_lexicon", "seconds")
        if all(k in r for r in runs)
    }
    out = {
        "command": "mlflow run . -e main --env-manager local " + " ".join(f"-P {p}" for p in args.params),
        "data": "bundled synthetic sample, test split = font families held out of training",
        "machine": harness.machine(),
        "load_at_start": load,
        "runs": runs,
        "summary": summary,
    }
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{'seed':>4} {'test CER':>9} {'beam':>7} {'lexicon':>8} {'hands':>6} {'epochs':>6} {'minutes':>8}")
    for r in runs:
        print(
            f"{r['seed']:>4} {r['test_cer']:>9.4f} {r.get('test_cer_beam', float('nan')):>7.4f} "
            f"{r.get('test_cer_lexicon', float('nan')):>8.4f} {r['test_hands']:>6} {r['epochs_run']:>6} "
            f"{r['seconds'] / 60:>8.1f}"
        )
    for k, s in summary.items():
        print(f"{k}: mean {s['mean']:.4f}, sd {s['sd']:.4f}, range {s['min']:.4f}-{s['max']:.4f}")


if __name__ == "__main__":
    main()
