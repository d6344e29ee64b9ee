"""Retraining: when a model is due, once per key, and the ledger shared by the trigger's replicas."""
