"""Training, evaluation, the promotion gate, lineage and MLflow tracking. Plain library code:
nothing here imports Dagster, and MLflow is imported only inside ``tracking`` functions."""
