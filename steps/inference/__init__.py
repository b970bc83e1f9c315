"""Inference: the one image preprocessing (imaging), the charset, CTC decoding and the loaded model.

This package is all the logged model carries (train ships it as the model's code), so it imports
nothing from the rest of `steps`.
"""
