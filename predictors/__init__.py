"""Custom KServe predictors, one per model, driven by the feature specs."""
