"""Research and benchmark scripts and the self-check bundle makers, quoted with their commands in
docs/*.md: ``python -m research.<script> ...`` from the repository root.

Not shipped in the wheel. They import the product (``ganomaly_edge``) and the demo's scene
(``examples``); nothing in the product imports them (tests/test_structure.py).
"""
