"""Fixtures of the scale-out tests: one PostgreSQL + `mlflow server` per session, shared by its tests."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.scaleout import engines


@dataclass
class Tracking:
    """A running tracking server over PostgreSQL, and the environment that points steps at it."""

    server: engines.TrackingServer
    postgres: engines.Postgres
    root: Path

    def env(self, experiment_id: str, **extra: str) -> dict[str, str]:
        out = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        out.update(
            MLFLOW_TRACKING_URI=self.server.url,
            MLFLOW_EXPERIMENT_ID=experiment_id,
            HWR_CACHE_DIR=str(self.root / f"cache-{experiment_id}"),
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        )
        out.update(extra)
        return out

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.server.url)


@pytest.fixture(scope="session")
def tracking(tmp_path_factory) -> Tracking:
    """PostgreSQL on a free loopback port, and `mlflow server` over it with proxied artifacts (mlflow-artifacts:/)."""
    postgres = engines.start_postgres()
    root = tmp_path_factory.mktemp("tracking")
    try:
        server = engines.start_tracking_server(postgres.uri, root)
    except BaseException:
        engines.stop_postgres(postgres)
        raise
    yield Tracking(server, postgres, root)
    engines.stop_process_group(server.process)
    engines.stop_postgres(postgres)
