"""From the raw layout to a TFRecord dataset: IAM formats, splits, planning, conversion, the TFRecord schema,
the build of dataset/ (build) and its typed description (info)."""
