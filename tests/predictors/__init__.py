"""Tests of the serving package (predictors/): whole-server and OIP conformance tests here, the rest by sub-package."""
