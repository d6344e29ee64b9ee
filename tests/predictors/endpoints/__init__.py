"""Tests of predictors.endpoints: draining."""
