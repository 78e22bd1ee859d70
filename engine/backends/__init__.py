"""One module per backend, each a subclass of ``engine.base.Engine``."""
