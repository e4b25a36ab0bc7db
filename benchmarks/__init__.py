"""Developer tools, not the product: the closed-loop harness and the serving benchmark.

Run from the repository root (``scripts/bench-loop.sh``, ``scripts/bench.sh``); the image does
not contain them and the product package never imports them.
"""
