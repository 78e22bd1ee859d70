"""The demo (``make demo``: ``python -m examples.demo``), its scene and its data set reader.

Not shipped in the wheel: run from the repository root. They import the product
(``ganomaly_edge``); nothing in the product imports them (tests/test_structure.py).
"""
