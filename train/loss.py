"""GANomaly losses (Akcay et al., 2018), each a small function.

Generator: w_adv * adversarial (feature matching on the discriminator's penultimate
features) + w_con * contextual (L1 between input and reconstruction) + w_enc * encoder (L2
between the two latent codes). Discriminator: binary cross-entropy on real vs reconstructed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    adversarial: float = 1.0
    contextual: float = 50.0
    encoder: float = 1.0


def adversarial_loss(feat_real: torch.Tensor, feat_fake: torch.Tensor) -> torch.Tensor:
    """Feature matching: squared distance of the discriminator's features of x and G(x)."""
    return torch.mean((feat_real - feat_fake) ** 2)


def contextual_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return torch.mean(torch.abs(x - x_hat))


def encoder_loss(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    return torch.mean((z - z_hat) ** 2)


def generator_loss(
    feat_real: torch.Tensor,
    feat_fake: torch.Tensor,
    x: torch.Tensor,
    x_hat: torch.Tensor,
    z: torch.Tensor,
    z_hat: torch.Tensor,
    w: LossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    adv = adversarial_loss(feat_real, feat_fake)
    con = contextual_loss(x, x_hat)
    enc = encoder_loss(z, z_hat)
    total = w.adversarial * adv + w.contextual * con + w.encoder * enc
    return total, {"g_adv": adv.item(), "g_con": con.item(), "g_enc": enc.item()}


def discriminator_loss(p_real: torch.Tensor, p_fake: torch.Tensor) -> torch.Tensor:
    """BCE of real images against 1 and reconstructions against 0, averaged as in the paper's code."""
    real = F.binary_cross_entropy(p_real, torch.ones_like(p_real))
    fake = F.binary_cross_entropy(p_fake, torch.zeros_like(p_fake))
    return 0.5 * (real + fake)
