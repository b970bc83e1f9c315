"""The model registry: the quality gate that decides on the alias (gate) and the registry calls around it (versions)."""
