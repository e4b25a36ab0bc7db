"""The demo, apart from the product: simulated data (``simulator``), seeding a repository with
it through write-audit-publish (``seeding``), and simulated clients whose true outcomes arrive
later as labels (``traffic``). The product never imports this package; ``mlops seed``,
``mlops ingest`` (without ``--file``) and ``mlops traffic`` use it.
"""
