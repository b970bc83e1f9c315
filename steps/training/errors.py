"""The training package's error, importable without TensorFlow (the train CLI names it before TF loads)."""


class ConfigError(ValueError):
    """A training configuration that cannot work on this dataset; the message names the fix."""
