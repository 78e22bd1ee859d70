"""The repository's unshipped folders (examples/, research/) as importable packages in the test
process, without putting the repository root on sys.path (which would also expose agent/,
engine/, ... under generic names and hide a missing ``ganomaly_edge`` namespace)."""

import importlib.util
import os
import sys

from .data import ROOT

OUTSIDE = ("examples", "research")


def expose(names=OUTSIDE):
    for name in names:
        if name in sys.modules:
            continue
        folder = os.path.join(ROOT, name)
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
