"""Prometheus metrics and the inference log of the predictors."""
