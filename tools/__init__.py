"""Tools around the product: the demo, the demo scene, a test broker, benchmarks and data sets.

They depend on the product packages (agent, engine, train); nothing in the product imports them.
"""
