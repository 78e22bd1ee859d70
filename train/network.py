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

from .choices import ARCHS
from .errors import TrainConfigError, TrainError

MIN_SIZE = 16
MAX_SIZE = 1024


class UnsupportedSizeError(TrainError, ValueError):
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

    def pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(z, the activation after every down-sampling block, finest first): a U-Net's skips."""
        skips = []
        h = x
        for layer in self.features:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):
                skips.append(h)
        return self.final(h), skips


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


class SkipDecoder(nn.Module):
    """Skip-GANomaly's decoder (Akcay et al., 2019): each up-sampling block also sees the
    encoder's activation at its resolution (U-Net skips), so fine detail need not pass the
    bottleneck. The finest skip (half resolution) is left out: with it the network can copy its
    input, defects included, and the residual goes blind."""

    def __init__(self, image_size: int, out_channels: int, latent_dim: int, width: int = 64):
        super().__init__()
        base, n_down = check_image_size(image_size)
        ch = width * 2 ** (n_down - 1)
        self.stem = nn.Sequential(nn.ConvTranspose2d(latent_dim, ch, base, 1, 0, bias=False),
                                  nn.BatchNorm2d(ch), nn.ReLU(True))
        ups = []
        for i in range(n_down - 1):
            # Each block also takes the encoder's activation of its input size (same channels).
            ups.append(nn.Sequential(nn.ConvTranspose2d(2 * ch, ch // 2, 4, 2, 1, bias=False),
                                     nn.BatchNorm2d(ch // 2), nn.ReLU(True)))
            ch //= 2
        self.ups = nn.ModuleList(ups)
        self.head = nn.Sequential(nn.ConvTranspose2d(ch, out_channels, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        h = self.stem(z)
        coarse = skips[::-1]  # coarsest first: coarse[0] has the stem's size
        for i, up in enumerate(self.ups):
            h = up(torch.cat([h, coarse[i]], 1))
        return self.head(h)  # the finest activation (coarse[-1]) is not used


class Generator(nn.Module):
    """x -> (x_hat, z, z_hat): encoder G_E, decoder G_D, second encoder E. ``arch="skip"`` gives
    the decoder U-Net skips from G_E (Skip-GANomaly); the rest is the same."""

    def __init__(self, image_size: int, channels: int, latent_dim: int = 100, width: int = 64,
                 arch: str = "paper"):
        super().__init__()
        if arch not in ARCHS:
            raise TrainConfigError(f"unknown generator architecture {arch!r}; choose one of {ARCHS}")
        self.arch = arch
        self.encoder1 = Encoder(image_size, channels, latent_dim, width)
        if arch == "skip":
            self.decoder = SkipDecoder(image_size, channels, latent_dim, width)
        else:
            self.decoder = Decoder(image_size, channels, latent_dim, width)
        self.encoder2 = Encoder(image_size, channels, latent_dim, width)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, G_E's penultimate features, x_hat) in one pass of the encoder."""
        if self.arch == "skip":
            z, skips = self.encoder1.pyramid(x)
            return z, skips[-1], self.decoder(z, skips)
        z, feat = self.encoder1(x, True)
        return z, feat, self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z, _, x_hat = self.reconstruct(x)
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
        # The probability in fp32 even when training under bf16 autocast: there a sigmoid near 1
        # keeps two digits, and the BCE of a confident D would read log(0).
        logit, sigmoid = self.classifier
        p = sigmoid(logit(f).float()).reshape(-1)
        return p, f


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation, as in the official code: N(0, 0.02) convs, N(1, 0.02) BN scale."""
    name = module.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
