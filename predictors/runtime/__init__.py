"""The model runtime: the spec-driven model, loading, scoring (ONNX or scikit-learn) and batching."""
