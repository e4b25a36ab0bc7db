"""Monitoring: drift between what a model was trained on and what it serves. Plain library
code, no Dagster; Evidently is imported inside the functions that use it (it takes seconds)."""
