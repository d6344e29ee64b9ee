"""Monitoring: drift against the training reference, live accuracy from outcomes, the payload log, the service."""
