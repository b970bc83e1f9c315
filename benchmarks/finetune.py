"""Fine-tuning figure: a model trained on the bundled sample, adapted to a few hundred words of hands it has not
seen, against training the same words from scratch; CER on those hands' held-out words, and the time.

    python benchmarks/finetune.py                         # base: README's main run (seed 42), 400 new words
    python benchmarks/finetune.py --words 300 -P epochs=10 --tune-epochs 15

Everything runs as a user runs it, through `mlflow run`, in a fresh tracking store and cache:
1. `main` on the bundled sample (its writer split holds whole hands, font families, out of training);
2. new words in exactly those held-out hands (the synthetic generator with another seed), written as a
   `dataset=folder` source (images + labels.tsv), downloaded and preprocessed with a random split;
3. the base model evaluated on those words as it is; then `train -P init_model=<base> -P freeze_epochs=2`
   and `train` from scratch on the same words, for the same epochs, each evaluated on the same test split.
Prints the figures and writes benchmarks/finetune.json with the machine facts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

REPO = harness.REPO


class Store:
    """A fresh tracking store and cache; `run` is `mlflow run . <args>` against it, timed."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self.env.update(MLFLOW_TRACKING_URI=self.uri, HWR_CACHE_DIR=str(root / "cache"))
        self.env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), self.env.get("PATH", "")])

    def run(self, name: str, *args: str) -> float:
        command = [str(Path(sys.executable).parent / "mlflow"), "run", ".", *args]
        harness.log(f"{name}: {' '.join(args)}")
        start = time.monotonic()
        proc = subprocess.run(command, cwd=REPO, env=self.env, capture_output=True, text=True)
        seconds = time.monotonic() - start
        (self.root / f"{name}.log").write_text(proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed (log in {self.root / name}.log):\n{proc.stderr[-2000:]}")
        return seconds

    def newest(self, step: str):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        (run,) = client.search_runs(["0"], f"tags.`hwr.step` = '{step}'", order_by=["attributes.start_time DESC"])[:1]
        return run


def held_out_hands(store: Store, preprocess_run: str) -> list[str]:
    import pyarrow.parquet as pq
    from mlflow.tracking import MlflowClient

    path = MlflowClient(store.uri).download_artifacts(preprocess_run, "dataset/manifest.parquet", str(store.root))
    table = pq.read_table(path).to_pylist()
    return sorted({r["writer"] for r in table if r["split"] == "test"})


def new_words_folder(out: Path, hands: list[str], words: int, seed: int) -> int:
    """Words of the held-out hands from a fresh synthetic set, as images + labels.tsv -> how many."""
    import tarfile

    from steps.dataset import iam_format
    from steps.sources import synthetic

    raw = out / "raw"
    raw.mkdir(parents=True)
    synthetic.generate(raw, num_words=words * 12, num_writers=60, seed=seed, progress=False)
    writers = iam_format.parse_forms((raw / "forms.txt").read_text().splitlines())
    listed, _ = iam_format.parse_words((raw / "words.txt").read_text().splitlines())
    chosen = {w.id: w for w in listed if w.ok and writers.get(w.form) in hands}
    chosen = dict(list(chosen.items())[:words])
    folder = out / "folder"
    folder.mkdir()
    rows = ["path\ttext\twriter"]
    with tarfile.open(raw / "words.tgz") as tar:
        for member in tar:
            word_id = iam_format.member_id(member.name)
            if word_id in chosen and member.isfile():
                (folder / f"{word_id}.png").write_bytes(tar.extractfile(member).read())
                rows.append(f"{word_id}.png\t{chosen[word_id].text}\t{writers[chosen[word_id].form]}")
    (folder / "labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(rows) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=400, help="new words in the held-out hands")
    parser.add_argument("--tune-epochs", type=int, default=15, help="epochs of both the fine-tune and the scratch run")
    parser.add_argument("--freeze-epochs", type=int, default=2)
    parser.add_argument("-P", dest="params", action="append", default=[], help="main's parameters for the base model")
    args = parser.parse_args()
    base_params = [a for p in args.params for a in ("-P", p)]
    with tempfile.TemporaryDirectory(prefix="hwr-finetune-") as tmp:
        store = Store(Path(tmp))
        figures: dict = {"machine": harness.machine(), "base_params": args.params, "words": args.words}
        figures["base_seconds"] = store.run("base", "-e", "main", "--env-manager", "local", *base_params)
        main_tags = store.newest("main").data.tags
        base_model = f"runs:/{main_tags['hwr.train_run']}/handwriting_recognition_model"
        hands = held_out_hands(store, main_tags["hwr.preprocess_run"])
        figures["hands"] = hands
        figures["new_words"] = new_words_folder(Path(tmp) / "new", hands, args.words, seed=1042)
        store.run("download", "-e", "download", "--env-manager", "local", "-P", "dataset=folder", "-P",
                  f"source={Path(tmp) / 'new' / 'folder'}")  # fmt: skip
        raw = f"runs:/{store.newest('download').info.run_id}/raw"
        split = ["-P", "split=random", "-P", "train_ratio=0.6", "-P", "val_ratio=0.1"]
        store.run("preprocess", "-e", "preprocess", "--env-manager", "local", "-P", f"raw_data={raw}", *split)
        data = f"runs:/{store.newest('preprocess').info.run_id}/dataset"
        figures["split"] = {k[len("samples_") :]: v for k, v in store.newest("preprocess").data.metrics.items() if
                            k.startswith("samples_")}  # fmt: skip

        def evaluate(name: str, model: str) -> float:
            store.run(f"evaluate-{name}", "-e", "evaluate", "--env-manager", "local", "-P", f"model_uri={model}",
                      "-P", f"data={data}")  # fmt: skip
            return store.newest("evaluate").data.metrics["test_cer"]

        figures["base_as_is_cer"] = evaluate("base", base_model)
        for name, extra in (
            ("fine_tuned", ["-P", f"init_model={base_model}", "-P", f"freeze_epochs={args.freeze_epochs}"]),
            ("scratch", []),
        ):
            seconds = store.run(
                f"train-{name}", "-e", "train", "--env-manager", "local", "-P", f"data={data}", "-P",
                f"epochs={args.tune_epochs}", "-P", "patience=100", *extra,
            )  # fmt: skip
            model = f"runs:/{store.newest('train').info.run_id}/handwriting_recognition_model"
            figures[name] = {"test_cer": evaluate(name, model), "train_seconds": round(seconds, 1)}
    print(json.dumps(figures, indent=1))
    (Path(__file__).parent / "finetune.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(
        f"held-out hands {', '.join(hands)}: base as is CER {figures['base_as_is_cer']:.3f}; "
        f"fine-tuned {figures['fine_tuned']['test_cer']:.3f} in {figures['fine_tuned']['train_seconds']:.0f} s; "
        f"from scratch {figures['scratch']['test_cer']:.3f} in {figures['scratch']['train_seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
