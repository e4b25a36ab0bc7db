from mlops_assets_tests.test_training.conftest import server_env  # noqa: F401 - shared fixture
