"""ganomaly-edge training: GANomaly in PyTorch, evaluation, calibration, export.

Modules that need torch import it themselves, so ``train.build_engine`` runs on a device that
has no torch when its source is a bundle.
"""
