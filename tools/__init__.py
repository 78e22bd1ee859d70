"""``ganomaly-bench`` (bench.py) and what it runs: the side-by-side, console, item and tile
benchmarks, the mosquitto launcher (broker.py, also the tests' broker) and the cast parts
(defects.py) its tile benchmark streams.

Shipped in the wheel as ``ganomaly_edge.tools``. The demo lives in examples/, the research and
benchmark scripts in research/; they import this package, never the reverse.
"""
