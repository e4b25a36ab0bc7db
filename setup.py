from setuptools import find_packages, setup

# The Dagster family moves together: core 1.13.27 with integrations 0.29.27 (same patch).
# Unpinned, the resolver picks years-old integrations that fail on import.

setup(
    name="mlops_assets",
    version="0.1.0",
    description="The ML lifecycle as Dagster software-defined assets: lakeFS, MLflow, Evidently.",
    python_requires=">=3.11,<3.13",
    packages=find_packages(exclude=["mlops_assets_tests", "mlops_assets_tests.*", "benchmarks"]),
    package_data={"mlops_assets.specs": ["*.yaml"], "mlops_assets.demo": ["specs/*.yaml"]},
    install_requires=[
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-graphql==1.13.27",
        "dagster-dg-cli==1.13.27",  # `dg check defs`, `dg list defs`, `dg launch`, `dg dev`
        "dagster-k8s==0.29.27",
        "dagster-postgres==0.29.27",
        # pandas 3 (a string dtype by default, copy-on-write) has not been tried here; the lock
        # holds 2.3, and pandas-stubs in the test extra follows the same minor version.
        "pandas>=2.2,<3",
        "numpy>=1.26",
        "pyarrow>=15",
        "pydantic>=2.6",
        "pyyaml>=6",
        "tabulate>=0.9",
        "scikit-learn>=1.5",
        "mlflow>=3.1,<4",
        "skops>=0.10",
        "evidently>=0.7,<0.8",
        "lakefs-sdk>=1.50,<2",
        "uvicorn[standard]>=0.30",  # the inference server: uvloop + httptools
        "orjson>=3.10",
        "httpx>=0.27",
        # Compiled inference: the trained pipeline converted to ONNX and served by ONNX Runtime
        # once the gate has verified parity (training/onnx_export.py, serving/compiled.py).
        "skl2onnx==1.20.0",
        "onnxruntime==1.32.0",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.6",  # two workers: the suite waits on servers as much as on CPU
            "hypothesis>=6.100",
            "ruff>=0.6",
            "moto[server]>=5.0",
            "playwright>=1.55",  # drives Debian's chromium; never downloads a browser
            "kubernetes-validate>=1.32",  # offline schema validation of the manifests
            "mypy==2.4.1",  # pinned: a new release can find new errors in unchanged code
            # Stubs for pandas and PyYAML, which ship no types of their own; pandas-stubs
            # follows pandas' minor version.
            "types-PyYAML>=6.0",
            "pandas-stubs>=2.3,<2.4",
        ],
    },
    entry_points={"console_scripts": ["mlops=mlops_assets.cli:main"]},
)
