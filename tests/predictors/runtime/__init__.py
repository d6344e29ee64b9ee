"""Tests of predictors.runtime: loading, scoring (ONNX parity) and micro-batching."""
