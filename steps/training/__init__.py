"""Training: the tf.data input pipeline (inputs), the network (model), the fit loop (fit), its plots (report)
and the export of the inference model (export)."""
