"""Generative priors: per-subject embeddings to use as kernel attributes."""
