"""Evaluation: error rates (metrics), predictions over a split and their error analysis (analysis)."""
