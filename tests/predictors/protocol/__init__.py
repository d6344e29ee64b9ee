"""Tests of predictors.protocol: the serving error and the feature contract."""
