"""Handwriting recognition as an MLflow multistep pipeline.

`steps/<entry point>.py` are the MLproject's thin CLIs (download, preprocess, train, evaluate, register,
serve, infer); the library they call lives in the subpackages, one concern each (see docs/design.md).
"""

from steps.workflow import quiet

# Known-harmless TensorFlow/Keras/MLflow lines go before any step imports those libraries (steps/workflow/quiet.py).
quiet.install()
