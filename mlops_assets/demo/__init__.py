"""The demo, apart from the product: simulated data (``simulator``), seeding a repository with
it through write-audit-publish (``seeding``), and simulated clients whose true outcomes arrive
later as labels (``traffic``). The product never imports this package; ``mlops seed``,
``mlops ingest`` (without ``--file``) and ``mlops traffic`` use it.

``specs/`` holds opt-in demo specs (``tickets``, a multiclass model) that the default demo does
not load: add the folder to ``MLOPS_SPECS_DIR`` (folders separated by ``:``) to run them too.
"""

from pathlib import Path

DEMO_SPECS_DIR = Path(__file__).parent / "specs"
