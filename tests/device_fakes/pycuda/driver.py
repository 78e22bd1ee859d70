import sys

from _fake_device import drv

sys.modules[__name__] = drv
