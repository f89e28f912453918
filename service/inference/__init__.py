"""Inference: a version's files loaded and verified, served by numpy replay, compiled trees or
scikit-learn."""

__all__ = ["compiled", "compiled_boosters", "fastpath", "model", "trees"]
