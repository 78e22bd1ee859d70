import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # a device running `pytest -m gpu` has no torch

from ganomaly_edge.train.loss import LossWeights, adversarial_loss, contextual_loss, discriminator_loss, encoder_loss, generator_loss
from ganomaly_edge.train.network import Discriminator, Generator, UnsupportedSizeError, check_image_size, supported_sizes
from ganomaly_edge.train.trainer import Trainer, TrainConfig


@pytest.mark.parametrize("size", [16, 28, 32, 48, 64, 96, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(size, channels):
    g, d = Generator(size, channels, latent_dim=20, width=8), Discriminator(size, channels, width=8)
    x = torch.randn(3, channels, size, size)
    x_hat, z, z_hat = g(x)
    assert x_hat.shape == x.shape
    assert z.shape == z_hat.shape == (3, 20, 1, 1)
    assert float(x_hat.abs().max()) <= 1.0  # Tanh output
    p, f = d(x)
    assert p.shape == (3,) and f.shape[0] == 3 and ((p >= 0) & (p <= 1)).all()


@pytest.mark.parametrize("size", [0, 8, 15, 33, 100, 50, 1000, 2048])
def test_unsupported_sizes_are_refused_at_once(size):
    t0 = time.perf_counter()
    with pytest.raises(UnsupportedSizeError) as e:
        Generator(size, 1)
    assert time.perf_counter() - t0 < 5  # the official decoder loops forever on these
    assert "Nearest supported sizes" in str(e.value) and str(size) in str(e.value)


def test_supported_sizes_build():
    sizes = supported_sizes()
    assert {16, 32, 48, 64, 128, 256} <= set(sizes)
    for s in sizes[:12]:
        check_image_size(s)
        Decoder_out = Generator(s, 1, latent_dim=4, width=4)(torch.zeros(1, 1, s, s))[0]
        assert Decoder_out.shape[-1] == s


def test_losses_match_definitions():
    a = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    b = torch.tensor([[1.0, 1.0], [2.0, 5.0]])
    assert adversarial_loss(a, b).item() == pytest.approx((1 + 0 + 0 + 4) / 4)
    assert contextual_loss(a, b).item() == pytest.approx((1 + 0 + 0 + 2) / 4)
    assert encoder_loss(a, b).item() == pytest.approx((1 + 0 + 0 + 4) / 4)
    total, parts = generator_loss(a, b, a, b, a, b, LossWeights(1, 50, 1))
    assert total.item() == pytest.approx(1.25 + 50 * 0.75 + 1.25)
    assert parts["g_con"] == pytest.approx(0.75)
    p_real = torch.tensor([0.9, 0.8])
    p_fake = torch.tensor([0.1, 0.3])
    expected = 0.5 * (-(np.log(0.9) + np.log(0.8)) / 2 - (np.log(0.9) + np.log(0.7)) / 2)
    assert discriminator_loss(p_real, p_fake).item() == pytest.approx(expected, rel=1e-5)


def _tiny(epochs=1, **kw):
    return TrainConfig(image_size=16, channels=1, width=8, latent_dim=8, epochs=epochs, batch_size=16,
                       threads=1, **kw)


def test_discriminator_reinitialised_when_its_loss_collapses(digits, monkeypatch):
    x, _ = digits
    tr = Trainer(_tiny(), x[:200], progress=False)
    batch = torch.from_numpy(x[:16]).permute(0, 3, 1, 2).float() / 127.5 - 1
    before = [p.detach().clone() for p in tr.d.parameters()]
    tr.step(batch)
    assert tr.d_reinits == 0
    import ganomaly_edge.train.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "D_COLLAPSE", 1e9)  # every loss now counts as collapsed
    tr.step(batch)
    assert tr.d_reinits == 1
    after = list(tr.d.parameters())
    # Re-initialised weights are fresh draws: neither the old ones nor one Adam step from them.
    assert all(not torch.allclose(a, b, atol=1e-3) for a, b in zip(before, after) if a.ndim == 4)


def test_training_is_reproducible_for_a_seed(digits):
    x, _ = digits
    a = Trainer(_tiny(epochs=1), x[:300], progress=False).run()
    b = Trainer(_tiny(epochs=1), x[:300], progress=False).run()
    for k in a["generator"]:
        assert torch.equal(a["generator"][k], b["generator"][k]), k
    assert a["calibration"] == b["calibration"]


def test_resume_equals_uninterrupted(digits, tmp_path):
    from ganomaly_edge.train.checkpoint import load_checkpoint

    x, _ = digits
    straight = Trainer(_tiny(epochs=2), x[:300], progress=False).run()
    path = str(tmp_path / "ck.pt")
    Trainer(_tiny(epochs=1), x[:300], out_path=path, progress=False).run()
    tr = Trainer(_tiny(epochs=2), x[:300], out_path=path, progress=False)
    tr.load_state(load_checkpoint(path))
    assert tr.epoch == 1
    resumed = tr.run()
    for k in straight["generator"]:
        assert torch.allclose(straight["generator"][k].float(), resumed["generator"][k].float(), atol=1e-6), k


def test_resume_refuses_other_data(digits, tmp_path):
    from ganomaly_edge.train.checkpoint import load_checkpoint

    x, _ = digits
    path = str(tmp_path / "ck.pt")
    Trainer(_tiny(epochs=1), x[:300], out_path=path, progress=False).run()
    tr = Trainer(_tiny(epochs=2), x[300:600], progress=False)
    with pytest.raises(ValueError, match="training images differ"):
        tr.load_state(load_checkpoint(path))


def test_score_of_an_image_does_not_depend_on_its_batch(digits):
    from ganomaly_edge.train.scoring import components

    x, _ = digits
    ck = Trainer(_tiny(epochs=1), x[:300], progress=False)
    tr = ck
    tr.run()
    alone = components(tr.g, tr.d, x[:1], tr.device, bank=None)
    crowd = components(tr.g, tr.d, x[:64], tr.device, bank=None)
    for k in ("latent", "recon", "features"):
        assert alone[k][0] == pytest.approx(crowd[k][0], rel=1e-4, abs=1e-7)
