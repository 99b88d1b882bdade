"""The two-platform example of strata's README (examples/python-multiplatform)."""
