"""mlops-assets: the machine-learning lifecycle as Dagster software-defined assets."""

__version__ = "0.1.0"
