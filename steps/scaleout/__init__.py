"""When one machine is not enough: batch transcription on Spark (spark)."""
