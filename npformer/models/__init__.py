"""Encoder graphs (one file per architecture), task heads and the model_type -> class map."""
