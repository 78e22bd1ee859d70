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
    assert float(x_hat.detach().abs().max()) <= 1.0  # Tanh output
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


def test_precision_auto_takes_bf16_only_on_a_cpu_that_has_it(monkeypatch):
    import ganomaly_edge.train.trainer as trainer_mod

    cpu = torch.device("cpu")
    monkeypatch.setattr(trainer_mod, "native_bf16", lambda: True)
    assert trainer_mod.resolve_precision("auto", cpu, 64) is torch.bfloat16
    assert trainer_mod.resolve_precision("auto", cpu, 32) is None  # too small a step for bf16 to pay
    assert trainer_mod.resolve_precision("bf16", cpu, 32) is torch.bfloat16
    assert trainer_mod.resolve_precision("fp32", cpu, 64) is None
    monkeypatch.setattr(trainer_mod, "native_bf16", lambda: False)
    assert trainer_mod.resolve_precision("auto", cpu, 64) is None
    with pytest.raises(ValueError, match="--precision must be one of auto, fp32, bf16"):
        trainer_mod.resolve_precision("fp16", cpu)


def test_bf16_asked_for_on_a_cpu_without_it_warns_and_runs(monkeypatch, caplog):
    import ganomaly_edge.train.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "native_bf16", lambda: False)
    with caplog.at_level("WARNING"):
        assert trainer_mod.resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16
    assert "emulates it" in caplog.text and "--precision fp32" in caplog.text


def test_the_discriminator_gives_fp32_probabilities_under_bf16_autocast():
    """A bf16 sigmoid near 1 rounds to 1.0 and the BCE of a confident D would read log(0)."""
    d = Discriminator(16, 1, 8)
    d.classifier[0].weight.data.fill_(0.1)  # a confident D: a logit of several units
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p, f = d(torch.ones(4, 1, 16, 16))
    assert f.dtype == torch.bfloat16 and p.dtype == torch.float32
    assert 0.999 < p.min().item() < 1.0
    assert torch.all(p.bfloat16() == 1.0)  # what a bf16 sigmoid would have given: log(1 - p) = -inf


def _old_step(tr, x):
    """The step before D was frozen for G's backward: D's gradients from G's loss were computed,
    then discarded by D's zero_grad."""
    w = tr.cfg.weights()
    x_hat, z, z_hat = tr.g(x)
    p_real, f_real = tr.d(x)
    _, f_fake = tr.d(x_hat)
    err_g, _ = generator_loss(f_real.detach(), f_fake, x, x_hat, z, z_hat, w)
    tr.opt_g.zero_grad(set_to_none=True)
    err_g.backward()
    tr.opt_g.step()
    p_fake, _ = tr.d(x_hat.detach())
    err_d = discriminator_loss(p_real, p_fake)
    tr.opt_d.zero_grad(set_to_none=True)
    err_d.backward()
    tr.opt_d.step()


def test_freezing_d_for_the_generator_loss_changes_no_update(digits):
    x, _ = digits
    batch = torch.from_numpy(x[:16]).permute(0, 3, 1, 2).float() / 127.5 - 1
    new, old = (Trainer(_tiny(precision="fp32"), x[:200], progress=False) for _ in range(2))
    for _ in range(3):
        new.step(batch)
        _old_step(old, batch)
    assert all(p.requires_grad for p in new.d.parameters())  # D still trains after the step
    for net in ("g", "d"):
        for (k, a), b in zip(getattr(new, net).state_dict().items(), getattr(old, net).state_dict().values()):
            assert torch.allclose(a.float(), b.float(), atol=1e-6), (net, k)


def test_bf16_training_learns_as_fp32_does_and_records_which_ran(digits):
    from ganomaly_edge.train.trainer import validation_loss

    x, _ = digits
    curves = {}
    for precision in ("fp32", "bf16"):
        tr = Trainer(_tiny(epochs=3, precision=precision), x[:1500], progress=False)
        untrained = validation_loss(tr.g, tr.val_tiles, tr.device)
        ck = tr.run()
        assert ck["train_precision"] == precision
        assert np.isfinite([h["g"] + h["d"] for h in ck["history"]]).all()
        assert np.isfinite(ck["calibration"]["threshold_raw"])
        curves[precision] = [h["val_con"] for h in ck["history"]]  # always measured in fp32
        assert curves[precision][-1] < 0.6 * untrained, (untrained, curves)
    # The same seed, the same batches: bf16 steps follow fp32's held-out curve closely.
    assert np.allclose(curves["bf16"], curves["fp32"], rtol=0.1), curves


def test_training_is_reproducible_for_a_seed(digits):
    x, _ = digits
    a = Trainer(_tiny(epochs=1), x[:300], progress=False).run()
    b = Trainer(_tiny(epochs=1), x[:300], progress=False).run()
    for k in a["generator"]:
        assert torch.equal(a["generator"][k], b["generator"][k]), k
    assert a["calibration"] == b["calibration"]


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_equals_uninterrupted(digits, tmp_path, ema):
    from ganomaly_edge.train.checkpoint import load_checkpoint

    x, _ = digits
    straight = Trainer(_tiny(epochs=2, ema=ema), x[:300], progress=False).run()
    path = str(tmp_path / "ck.pt")
    Trainer(_tiny(epochs=1, ema=ema), x[:300], out_path=path, progress=False).run()
    # Each epoch's checkpoint (here the first) carries the weight average on, as --resume needs.
    tr = Trainer(_tiny(epochs=2, ema=ema), x[:300], out_path=path, progress=False)
    tr.load_state(load_checkpoint(path))
    assert tr.epoch == 1
    resumed = tr.run()
    for k in straight["generator"]:
        assert torch.allclose(straight["generator"][k].float(), resumed["generator"][k].float(), atol=1e-6), k


def test_weight_average_follows_its_formula():
    from ganomaly_edge.train.trainer import WeightAverage

    live = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    avg = WeightAverage(live, 0.9)
    expected = {k: v.clone() for k, v in live.state_dict().items()}
    for n in range(1, 40):
        with torch.no_grad():
            for p in live.parameters():
                p.add_(torch.randn_like(p))
        live(torch.randn(4, 3))  # BatchNorm's running statistics and its integer counter move
        avg.update(live)
        d = min(0.9, (1 + n) / (10 + n))
        for k, v in live.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v if v.is_floating_point() else v.clone()
    for k, v in avg.model.state_dict().items():
        assert torch.allclose(v, expected[k], atol=1e-6), k
    assert avg.model.state_dict()["1.num_batches_tracked"] == 39
    assert not any(p.requires_grad for p in avg.model.parameters())
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(live, 1.0)


def test_the_weight_average_is_judged_selected_and_deployed(digits):
    """With --ema the held-out loss is the average's, the epoch kept is the average of that epoch,
    and the checkpoint's generator is that average, not the live weights."""
    from ganomaly_edge.train.trainer import validation_loss

    x, _ = digits
    seen = []

    def on_epoch(epoch, tr):
        seen.append({"avg": {k: v.clone() for k, v in tr.g_avg.model.state_dict().items()},
                     "live": {k: v.clone() for k, v in tr.g.state_dict().items()},
                     "val_avg": validation_loss(tr.g_avg.model, tr.val_tiles, tr.device),
                     "val_live": validation_loss(tr.g, tr.val_tiles, tr.device)})

    ck = Trainer(_tiny(epochs=3, ema=0.95, select="best-val"), x[:600], progress=False, on_epoch=on_epoch).run()
    for h, s in zip(ck["history"], seen):
        assert h["val_con"] == pytest.approx(s["val_avg"], rel=1e-5)
    assert any(abs(s["val_avg"] - s["val_live"]) > 1e-4 for s in seen)  # they are different networks
    best = seen[ck["best"]["epoch"] - 1]
    for k, v in ck["generator"].items():
        assert torch.equal(v, best["avg"][k]), k
    assert any(not torch.equal(v, best["live"][k]) for k, v in ck["generator"].items() if v.is_floating_point())
    assert ck["generator_average"] is None  # a finished checkpoint carries one generator


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
