"""The online inference server: plain library code, no Dagster. See ``app.py``."""
