"""Evaluation: detection scoring and classification scoring against reference annotations."""
