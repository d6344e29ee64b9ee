"""The wire: the serving error, Open Inference Protocol tensors, HTTP edges and the feature contract."""
