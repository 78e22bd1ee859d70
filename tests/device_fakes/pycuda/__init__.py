import sys

from _fake_device import pkg

sys.modules[__name__] = pkg
