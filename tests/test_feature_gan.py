"""Stage 2 of the ACGAN method: conditional feature GAN networks, losses on logits, the trainer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mimtl.engines import ConditionalGanTrainer, sample_fake_labels
from mimtl.handlers.loss_curves import LossCurveWriter
from mimtl.losses import ACGANLoss
from mimtl.networks import FeatureDiscriminator, FeatureGenerator


def _toy(n_per_class=(40, 16), dim=8, seed=0):
    """Two well separated Gaussian classes (imbalanced) in ``dim`` dimensions, as dict items."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, n in enumerate(n_per_class):
        centre = torch.full((dim,), 2.0 if c else -2.0)
        xs.append(centre + 0.5 * torch.randn(n, dim, generator=g))
        ys.append(torch.full((n,), c))
    x, y = torch.cat(xs), torch.cat(ys)
    return [{"features": x[i], "label": y[i]} for i in range(len(y))]


def test_networks_shapes_and_raw_logits():
    g = FeatureGenerator(latent_size=6, num_classes=3, out_features=10, hidden=(16,))
    d = FeatureDiscriminator(10, 3, hidden=(16,), twin=True, projection=True)
    z, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 1, 0])
    f = g(z, y)
    adv, cls, twin = d(f, y)
    assert f.shape == (5, 10) and adv.shape == (5,) and cls.shape == (5, 3) and twin.shape == (5, 3)
    # logits, not probabilities: rows do not sum to 1 and values leave [0, 1]
    assert not torch.allclose(cls.softmax(1).sum(1), cls.sum(1))
    plain = FeatureDiscriminator(10, 3, hidden=(16,))
    assert plain(f)[2].shape == (5, 0)
    with pytest.raises(ValueError, match="needs the labels"):
        d(f)
    with pytest.raises(ValueError, match=r"\(batch, 10\), got \[5, 9\]"):
        d(torch.randn(5, 9), y)


class _FixedD(torch.nn.Module):
    """A 'discriminator' that returns given logits, so the loss terms can be checked by hand."""

    def __init__(self, adv, cls, twin):
        super().__init__()
        self.out = (adv, cls, twin)

    def forward(self, f, y=None):
        return self.out


def test_loss_terms_are_bce_and_cross_entropy_on_logits():
    """The terms equal BCE-with-logits and CE computed on the raw logits; a double softmax
    (CE of softmax(logits)) gives another value, so this fails on that bug."""
    adv = torch.tensor([2.0, -1.0, 0.5])
    cls = torch.tensor([[4.0, -3.0], [0.0, 5.0], [-2.0, 2.0]])
    y = torch.tensor([0, 1, 0])
    d = _FixedD(adv, cls, cls.new_zeros(3, 0))
    loss = ACGANLoss()
    _, g_terms = loss.generator_loss(d, torch.zeros(3, 4), y)
    assert g_terms["adv"] == pytest.approx(float(F.binary_cross_entropy_with_logits(adv, torch.ones(3))))
    want = float(F.cross_entropy(cls, y))
    assert g_terms["aux_fake"] == pytest.approx(want)
    assert abs(float(F.cross_entropy(cls.softmax(1), y)) - want) > 0.1  # a double softmax would differ
    total, d_terms = loss.discriminator_loss(d, torch.zeros(3, 4), y, torch.zeros(3, 4), y)
    bce = F.binary_cross_entropy_with_logits
    assert d_terms["adv"] == pytest.approx(float(bce(adv, torch.ones(3)) + bce(adv, torch.zeros(3))))
    assert d_terms["aux_real"] == pytest.approx(want) and d_terms["aux_fake"] == pytest.approx(want)
    assert float(total) == pytest.approx(sum(d_terms.values()))


def test_label_smoothing_tac_and_wgan_terms():
    adv = torch.tensor([1.0, -1.0])
    cls = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    twin = torch.tensor([[0.0, 3.0], [2.0, 0.0]])
    y = torch.tensor([0, 1])
    d = _FixedD(adv, cls, twin)
    _, terms = ACGANLoss(label_smoothing=0.2).discriminator_loss(d, torch.zeros(2, 3), y, torch.zeros(2, 3), y)
    bce = F.binary_cross_entropy_with_logits
    assert terms["adv"] == pytest.approx(float(bce(adv, torch.full((2,), 0.8)) + bce(adv, torch.zeros(2))))
    tac = ACGANLoss(tac=True)
    _, d_terms = tac.discriminator_loss(d, torch.zeros(2, 3), y, torch.zeros(2, 3), y)
    assert "aux_fake" not in d_terms and d_terms["twin"] == pytest.approx(float(F.cross_entropy(twin, y)))
    _, g_terms = tac.generator_loss(d, torch.zeros(2, 3), y)
    assert g_terms["twin"] == pytest.approx(-float(F.cross_entropy(twin, y)))
    with pytest.raises(ValueError, match="twin"):
        tac.generator_loss(_FixedD(adv, cls, cls.new_zeros(2, 0)), torch.zeros(2, 3), y)
    real_d = FeatureDiscriminator(3, 2, hidden=(8,))
    _, w_terms = ACGANLoss(adversarial="wgan-gp").discriminator_loss(
        real_d, torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), torch.randn(4, 3), torch.tensor([1, 1, 0, 0])
    )
    assert set(w_terms) == {"adv", "gp", "aux_real", "aux_fake"} and w_terms["gp"] >= 0
    with pytest.raises(ValueError, match="adversarial"):
        ACGANLoss(adversarial="hinge")


def test_fake_labels_prior():
    real = torch.tensor([1, 1, 1])
    assert set(sample_fake_labels(50, "batch", real, 2).tolist()) == {1}
    assert set(sample_fake_labels(200, "uniform", real, 3).tolist()) == {0, 1, 2}
    assert set(sample_fake_labels(50, [0.0, 1.0], real, 2).tolist()) == {1}
    with pytest.raises(ValueError, match="probabilities"):
        sample_fake_labels(5, [1.0], real, 2)


def _trainer(data, batch_size=16, epochs=1, tac=False, handlers=None, seed=0, amp=False):
    torch.manual_seed(seed)
    g = FeatureGenerator(8, 2, 8, hidden=(32,))
    d = FeatureDiscriminator(8, 2, hidden=(32,), twin=tac)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    return ConditionalGanTrainer(
        device="cpu",
        max_epochs=epochs,
        train_data_loader=loader,
        g_network=g,
        g_optimizer=torch.optim.Adam(g.parameters(), 2e-3, betas=(0.5, 0.999)),
        d_network=d,
        d_optimizer=torch.optim.Adam(d.parameters(), 2e-3, betas=(0.5, 0.999)),
        loss_function=ACGANLoss(tac=tac),
        latent_shape=8,
        d_train_steps=2,
        train_handlers=handlers,
        seed=seed,
        amp=amp,
    )


def test_partial_last_batch_gets_as_many_fakes_and_fresh_fakes_per_d_step():
    data = _toy((10, 7))  # 17 items, batch 8: the last batch has 1
    trainer = _trainer(data, batch_size=8)
    seen = []
    original = trainer.loss.discriminator_loss

    def spy(d, reals, y, fakes, fy):
        seen.append((reals.shape[0], fakes.shape[0], fakes.clone()))
        return original(d, reals, y, fakes, fy)

    trainer.loss.discriminator_loss = spy
    trainer.run()
    assert [(r, f) for r, f, _ in seen] == [(8, 8), (8, 8), (8, 8), (8, 8), (1, 1), (1, 1)]
    assert not torch.equal(seen[0][2], seen[1][2])  # each D step drew new fakes


@pytest.mark.parametrize("tac", [False, True])
def test_a_few_gan_steps_lower_the_auxiliary_loss(tac, tmp_path):
    """On separable toy features G learns to make fakes of the asked class: G's auxiliary CE falls."""
    curves = LossCurveWriter(tmp_path, keys=["g_loss", "d_loss", "g_aux_fake", "d_aux_real"], every_n_epochs=5)
    trainer = _trainer(_toy(), epochs=15, tac=tac, handlers=[curves])
    trainer.run()
    aux = [row["g_aux_fake"] for row in curves.history]
    assert len(aux) == 15
    assert sum(aux[-3:]) / 3 < 0.5 * sum(aux[:2]) / 2, aux
    assert (tmp_path / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "loss_curves.csv").read_text().splitlines()[0] == "epoch,d_aux_real,d_loss,g_aux_fake,g_loss"
    # the fakes of the two classes moved apart toward their classes (the toy classes are at -2 and +2)
    g = trainer.g_network.eval()
    with torch.no_grad():
        f0 = g(torch.randn(200, 8), torch.zeros(200, dtype=torch.long)).mean()
        f1 = g(torch.randn(200, 8), torch.ones(200, dtype=torch.long)).mean()
    assert f1 - f0 > 1.0, (f0, f1)


def test_same_seed_same_generator():
    a, b = _trainer(_toy(), epochs=2), _trainer(_toy(), epochs=2)
    a.run()
    b.run()
    for p, q in zip(a.g_network.parameters(), b.g_network.parameters()):
        assert torch.equal(p, q)


def test_torchscript_generator_and_discriminator(tmp_path):
    g = FeatureGenerator(4, 2, 6, hidden=(8,)).eval()
    d = FeatureDiscriminator(6, 2, hidden=(8,), twin=True, projection=True).eval()
    for net, args in (
        (g, (torch.randn(3, 4), torch.tensor([0, 1, 1]))),
        (d, (torch.randn(3, 6), torch.tensor([0, 1, 1]))),
    ):
        path = tmp_path / "net.ts"
        torch.jit.save(torch.jit.script(net), str(path))
        loaded = torch.jit.load(str(path))
        want, got = net(*args), loaded(*args)
        for w, o in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            torch.testing.assert_close(o, w)


def test_bad_batches_are_named():
    trainer = _trainer([{"x": torch.zeros(8), "label": torch.tensor(0)}] * 4, batch_size=2)
    with pytest.raises(ValueError, match="'features'"):
        trainer.run()


def test_amp_switch_runs_on_cpu():
    """amp=True autocasts to bf16 on a CPU (fp16 + grad scaler on CUDA); the losses stay finite."""
    trainer = _trainer(_toy((8, 8)), batch_size=8, amp=True)
    trainer.run()
    assert all(torch.isfinite(p).all() for p in trainer.g_network.parameters())
    assert isinstance(trainer.state.output["g_loss"], float)


def test_monai_checkpoint_saver_attaches_and_reloads(tmp_path):
    from monai.handlers import CheckpointSaver

    trainer = _trainer(_toy((8, 8)), batch_size=8, epochs=2)
    saver = CheckpointSaver(
        str(tmp_path), {"generator": trainer.g_network, "discriminator": trainer.d_network}, save_final=True
    )
    saver.attach(trainer)
    trainer.run()
    (ckpt,) = tmp_path.glob("*.pt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    g = FeatureGenerator(8, 2, 8, hidden=(32,))
    g.load_state_dict(state["generator"])
    z, y = torch.randn(3, 8), torch.tensor([0, 1, 1])
    torch.testing.assert_close(g.eval()(z, y), trainer.g_network.eval()(z, y))
