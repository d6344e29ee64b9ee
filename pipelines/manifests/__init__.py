"""Kustomize manifests: rendered from the feature specs, built and validated."""
