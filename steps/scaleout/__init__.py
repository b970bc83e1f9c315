"""When one machine is not enough: batch transcription on Spark (spark) and the roles of a TF cluster (cluster)."""
