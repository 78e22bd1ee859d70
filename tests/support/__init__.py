"""Helpers shared by the test modules: the one place to look before writing a new one.

- ``support.data``: ``ROOT``, real images (``digits_u8``, ``write_images``), a trained checkpoint
  (``make_checkpoint``) and re-signed bundle metadata (``edit_bundle_meta``);
- ``support.agent``: the one agent config writer (``write_config``), the one launcher
  (``start_agent``), the MQTT ``Subscriber`` and what the process tests read back;
- ``support.deploy``: the systemd unit's directives, ``install.sh`` and a scratch root;
- ``support.fakes``: TensorRT and pycuda fakes; ``support.fakes.gpio``: a fake libgpiod (v2) the
  agent's process imports as ``gpiod``, and the chips and edges a test drives through it;
- ``support.outside``: ``expose()``, which conftest.py calls so that tests import the unshipped
  ``examples`` and ``research`` packages from the repository.

Fixtures (``broker``, ``scans``, the tiny checkpoint and bundle, ``digits``) are registered in
``tests/conftest.py``. A test module never imports another test module
(tests/test_structure.py checks it): what two modules share lives here.
"""
