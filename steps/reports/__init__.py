"""Figures logged as artifacts (matplotlib, headless): sample grids, learning curves, error analysis."""
