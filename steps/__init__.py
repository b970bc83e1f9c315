"""Handwriting recognition as an MLflow multistep pipeline.

`steps/<entry point>.py` are the MLproject's thin CLIs (download, preprocess, train, evaluate, register,
serve, infer); the library they call lives in the subpackages, one concern each (see docs/design.md).
"""

import os

# TF's C++ INFO/WARNING lines (CPU features, rendezvous aborts on a skipped corrupt image) drown the
# step logs; errors still show. Set before any step imports tensorflow; users can override it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
