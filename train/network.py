"""The GANomaly networks (Akcay et al., 2018) as plain ``nn.Module``s.

Generator: encoder -> decoder -> encoder, DCGAN style, as in the official code. The official
decoder loops forever when the image size is not a power of two; here the size is checked up
front (``check_image_size``) and the stack is planned from it, so a size either works or is
refused with the nearest sizes that do.

Nothing about training lives here: losses are in ``loss.py``, the loop in ``trainer.py``.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_SIZE = 16
MAX_SIZE = 1024


class UnsupportedSizeError(ValueError):
    """The requested image size cannot be built into the DCGAN stack."""


def _plan(size: int) -> tuple[int, int] | None:
    """(base, n_down) with size == base * 2**n_down, base in 4..7 and n_down >= 2, else None."""
    if size < MIN_SIZE or size > MAX_SIZE:
        return None
    n = 0
    s = size
    while s >= 8 and s % 2 == 0:
        s //= 2
        n += 1
    if 4 <= s <= 7 and n >= 2:
        return s, n
    return None


def supported_sizes() -> list[int]:
    return [s for s in range(MIN_SIZE, MAX_SIZE + 1) if _plan(s) is not None]


def check_image_size(size: int) -> tuple[int, int]:
    """Return the (base, n_down) plan for ``size`` or raise ``UnsupportedSizeError`` at once."""
    plan = _plan(int(size))
    if plan is None:
        valid = supported_sizes()
        lower = [s for s in valid if s < size][-1:] or []
        upper = [s for s in valid if s > size][:1] or []
        near = ", ".join(str(s) for s in lower + upper)
        raise UnsupportedSizeError(
            f"image size {size} is not supported: the encoder halves the image with stride-2 "
            f"convolutions down to a 4..7 pixel map, so the size must be 4, 5, 6 or 7 times a power "
            f"of two, between {MIN_SIZE} and {MAX_SIZE} (e.g. 32, 48, 64, 96, 128, 256). "
            f"Nearest supported sizes: {near}. Pass --image-size with one of them."
        )
    return plan


class Encoder(nn.Module):
    """DCGAN encoder: image [N, C, S, S] -> [N, out_dim, 1, 1].

    ``features`` is everything before the last convolution; the discriminator uses those
    features for the feature-matching adversarial loss.
    """

    def __init__(self, image_size: int, in_channels: int, out_dim: int, width: int = 64):
        super().__init__()
        base, n_down = check_image_size(image_size)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        ch = width
        for _ in range(n_down - 1):
            layers += [
                nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.final = nn.Conv2d(ch, out_dim, base, 1, 0, bias=False)
        self.feature_channels = ch

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """z [N, out_dim, 1, 1], or (z, features) when asked (one pass, for scoring)."""
        f = self.features(x)
        z = self.final(f)
        return (z, f) if with_features else z


class Decoder(nn.Module):
    """DCGAN decoder: latent [N, nz, 1, 1] -> image [N, C, S, S] in [-1, 1] (Tanh)."""

    def __init__(self, image_size: int, out_channels: int, latent_dim: int, width: int = 64):
        super().__init__()
        base, n_down = check_image_size(image_size)
        ch = width * 2 ** (n_down - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, ch, base, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(n_down - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Generator(nn.Module):
    """x -> (x_hat, z, z_hat): encoder G_E, decoder G_D, second encoder E."""

    def __init__(self, image_size: int, channels: int, latent_dim: int = 100, width: int = 64):
        super().__init__()
        self.encoder1 = Encoder(image_size, channels, latent_dim, width)
        self.decoder = Decoder(image_size, channels, latent_dim, width)
        self.encoder2 = Encoder(image_size, channels, latent_dim, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder1(x)
        x_hat = self.decoder(z)
        z_hat = self.encoder2(x_hat)
        return x_hat, z, z_hat


class Discriminator(nn.Module):
    """x -> (probability real [N], penultimate features [N, F, b, b])."""

    def __init__(self, image_size: int, channels: int, width: int = 64):
        super().__init__()
        enc = Encoder(image_size, channels, 1, width)
        self.features = enc.features
        self.classifier = nn.Sequential(enc.final, nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        p = self.classifier(f).reshape(-1)
        return p, f


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation, as in the official code: N(0, 0.02) convs, N(1, 0.02) BN scale."""
    name = module.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
