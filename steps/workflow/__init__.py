"""How the steps are wired: names and defaults (config), MLflow runs (runs), artifact URIs (artifacts)
and the pipeline's graph with its run cache (chain). The only library package that talks to MLflow runs."""
