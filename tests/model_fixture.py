"""A tiny real model for the serve and infer tests: synthetic words -> dataset -> 1 epoch -> registry.

`tiny_model(tmp_path_factory)` builds it once per test session (about 30 s on a quiet machine) in a subprocess, into its
own tracking store `sqlite:///<tmp>/mlflow.db`, registered as HandwritingRecognitionModel version 1 with
alias champion, and returns where everything is. `env(model)` is the environment for subprocesses that
use it. Nothing is mocked: this is the real synthetic generator, preprocess, train and registry.

Also runnable by hand: `python -m tests.model_fixture /tmp/somewhere` prints the same facts as JSON.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NUM_WORDS, NUM_WRITERS, SEED = 150, 6, 42
SAMPLE_IMAGES = 8


@dataclasses.dataclass(frozen=True)
class TinyModel:
    root: Path
    tracking_uri: str
    run_id: str
    runs_uri: str  # runs:/<run_id>/handwriting_recognition_model
    name: str
    version: str
    images: tuple[Path, ...]  # good word PNGs from the synthetic set

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.name}@champion"

    @property
    def version_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def env(model: TinyModel, **extra: str) -> dict[str, str]:
    """os.environ pointed at the tiny model's store, this interpreter's bin dir first on PATH
    (`mlflow run --env-manager local` runs `python` from PATH), with no run/experiment of the test session."""
    out = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    out.update(
        MLFLOW_TRACKING_URI=model.tracking_uri,
        HWR_CACHE_DIR=str(model.root / "cache"),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    out.update(extra)
    return out


_built: TinyModel | None = None


def tiny_model(tmp_path_factory) -> TinyModel:
    """Build the tiny model once per session (cached here, so every test module shares it)."""
    global _built
    if _built is None:
        root = tmp_path_factory.mktemp("tiny-model")
        environ = {
            k: v
            for k, v in os.environ.items()
            if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_URI")
        }
        proc = subprocess.run(
            [sys.executable, "-m", "tests.model_fixture", str(root)],
            cwd=REPO,
            env=environ,
            capture_output=True,
            text=True,
            timeout=900,  # a shared 2-core machine under load builds it in minutes, not seconds
        )
        if proc.returncode != 0:
            raise RuntimeError(f"building the tiny model failed:\n{proc.stderr[-4000:]}")
        facts = json.loads(proc.stdout.strip().splitlines()[-1])
        _built = TinyModel(
            root=root,
            tracking_uri=facts["tracking_uri"],
            run_id=facts["run_id"],
            runs_uri=facts["runs_uri"],
            name=facts["name"],
            version=str(facts["version"]),
            images=tuple(Path(p) for p in facts["images"]),
        )
    return _built


def build(root: Path) -> dict:
    """Generate, preprocess, train one epoch and register, all under `root`; returns the facts as a dict."""
    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ["HWR_CACHE_DIR"] = str(root / "cache")
    os.chdir(root)  # the default artifact root ./mlruns lands under root

    import mlflow
    from mlflow.tracking import MlflowClient

    from steps import train
    from steps.dataset.build import build as build_dataset
    from steps.dataset.plan import PreprocessConfig
    from steps.sources import synthetic
    from steps.workflow import config

    synthetic.generate(root / "raw", NUM_WORDS, NUM_WRITERS, SEED, progress=False)
    (root / "ds").mkdir()
    build_dataset(
        root / "raw",
        root / "ds",
        PreprocessConfig("words", "writer", 0.75, 0.15, SEED, 32, 128, 24, False, 1000, 1),
        progress=False,
    )
    # A small network: the tests need a real exported model, not a good one.
    train.main(
        [
            "--data",
            str(root / "ds"),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--conv-filters",
            "8,16",
            "--rnn-units",
            "32",
            "--dense-units",
            "16",
        ],
        standalone_mode=False,
    )
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs(["0"], f"tags.`{config.TAG_STEP}` = 'train'")
    runs_uri = f"runs:/{run.info.run_id}/{config.MODEL_ARTIFACT}"
    version = mlflow.register_model(runs_uri, config.REGISTERED_MODEL)
    client.set_registered_model_alias(config.REGISTERED_MODEL, "champion", version.version)

    images_dir = root / "images"
    images_dir.mkdir()
    images = []
    with tarfile.open(root / "raw" / config.WORDS_ARCHIVE) as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else b""
            if len(images) < SAMPLE_IMAGES and data and _decodes(data):
                out = images_dir / Path(member.name).name
                out.write_bytes(data)
                images.append(str(out))
    return {
        "tracking_uri": tracking_uri,
        "run_id": run.info.run_id,
        "runs_uri": runs_uri,
        "name": config.REGISTERED_MODEL,
        "version": version.version,
        "images": images,
    }


def _decodes(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:
        return False


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    print(json.dumps(build(Path(sys.argv[1]).resolve())))
