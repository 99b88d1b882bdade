"""The example app of strata's README."""
