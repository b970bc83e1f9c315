"""Handwriting recognition as an MLflow multistep pipeline: one module per step, shared logic beside them."""

import os

# TF's C++ INFO/WARNING lines (CPU features, rendezvous aborts on a skipped corrupt image) drown the
# step logs; errors still show. Set before any step imports tensorflow; users can override it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
