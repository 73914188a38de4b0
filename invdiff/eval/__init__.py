"""Evaluation: image quality metrics and the classical baselines a prior has to beat."""
