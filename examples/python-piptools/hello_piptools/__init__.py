"""strata's pip-tools recipe."""
