"""Loading a model URI, the one way every consumer does it (serve, infer, evaluate, the benchmarks).

The URI is checked first with MLflow alone (it reads only the MLmodel file), so a typo fails in a
couple of seconds instead of after TensorFlow has been imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mlflow

if TYPE_CHECKING:  # imported where a model is loaded: it imports TensorFlow, which `locate` does not need
    from steps.inference.recognizer import HandwritingModel


class ModelLoadError(LookupError):
    """A model URI that names no model, or a model that cannot be used; the message says which store was asked."""


def _store() -> str:
    return f" (looked in the tracking store {mlflow.get_tracking_uri()}; set MLFLOW_TRACKING_URI to use another)"


def locate(model_uri: str) -> None:
    """ModelLoadError unless `model_uri` names a logged model: a check in a second or two, with MLflow alone (a
    supervisor of several server processes makes it before starting any)."""
    try:
        mlflow.models.get_model_info(model_uri)
    except (mlflow.exceptions.MlflowException, OSError) as e:
        raise ModelLoadError(f"cannot load model {model_uri!r}: {getattr(e, 'message', e)}{_store()}") from None


def load(model_uri: str) -> HandwritingModel:
    """models:/Name@alias, models:/Name/<version>, runs:/<run>/<name>, models:/m-<id> or a path -> HandwritingModel."""
    from steps.inference.charset import CharsetError
    from steps.inference.recognizer import HandwritingModel

    store = _store()
    locate(model_uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    except mlflow.exceptions.MlflowException as e:
        raise ModelLoadError(f"cannot load model {model_uri!r}: {e.message}{store}") from None
    except OSError as e:
        raise ModelLoadError(f"cannot load model {model_uri!r}: {e}{store}") from None
    except CharsetError as e:
        raise ModelLoadError(f"cannot use model {model_uri!r}: {e}") from None
    if not isinstance(model, HandwritingModel):
        raise ModelLoadError(
            f"{model_uri!r} is not a handwriting recognition model (it holds a {type(model).__name__})"
        )
    return model
