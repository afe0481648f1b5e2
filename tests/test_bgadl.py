"""BGADL: a warm-started VAE-ACGAN whose synthetic samples stay in the training set (docs/methods.md §11)."""

import logging

import pytest
import torch

from helpers import context, toy_data
from ladarun.acquisition import MaxEntropy
from ladarun.augment import BGADL
from ladarun.augment.bgadl import pixel_range
from ladarun.augment.policy import count_parameters
from ladarun.augment.vae_acgan import Discriminator, Encoder, Generator
from ladarun.data.base import ActiveDataset
from ladarun.errors import ConfigError
from ladarun.models import cnn


def fashion_sized(n=40, channels=1, size=28, classes=10):
    return ActiveDataset(
        "fake",
        torch.randn(n, channels, size, size),
        torch.arange(n) % classes,
        torch.randn(4, channels, size, size),
        torch.arange(4) % classes,
        classes,
    )


def test_network_sizes_near_the_paper_at_width_1():
    aug = BGADL(width=1.0)
    aug._check_shape(fashion_sized())  # builds E, G, D for 1x28x28 and 10 classes
    assert aug.aux_parameters() == 460_736 + 6_652_481 + 6_559_169 == 13_672_386
    # the reference's 13.59M ("13M")
    assert abs(aug.aux_parameters() - 13_590_283) / 13_590_283 < 0.01
    small = BGADL()  # default width 0.5: G and D at half width
    small._check_shape(fashion_sized())
    assert 3_000_000 < small.aux_parameters() < 4_000_000
    assert count_parameters(Encoder(1, 28)) == 460_736  # E does not depend on the width


@pytest.mark.parametrize("shape", [(1, 28), (3, 32), (1, 8)])
def test_network_shapes(shape):
    channels, size = shape
    x = torch.rand(5, channels, size, size)
    mu, logvar = Encoder(channels, size, latent_dim=64)(x)
    assert mu.shape == logvar.shape == (5, 64)
    fake = Generator(channels, size, 10, latent_dim=64)(mu, torch.arange(5))
    # sigmoid: images in [0, 1]
    assert fake.shape == x.shape and bool(((fake >= 0) & (fake <= 1)).all())
    assert Discriminator(channels, size)(fake).shape == (5,)


def test_pixel_range_inverts_the_dataset_normalisation():
    u = torch.rand(50, 3, 4, 4)
    u[0, :, 0, 0], u[1, :, 0, 0] = 0.0, 1.0  # the darkest and brightest pixels of every channel
    mean, std = (
        torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1),
        torch.tensor([0.20, 0.20, 0.20]).view(1, 3, 1, 1),
    )
    lo, hi = pixel_range((u - mean) / std)
    torch.testing.assert_close(lo, -mean / std)
    torch.testing.assert_close(((u - mean) / std - lo) / (hi - lo), u)


def snapshot(*nets):
    return [t.detach().clone() for n in nets for t in list(n.parameters()) + list(n.buffers())]


def test_gan_trains_warm_and_its_samples_accumulate_in_the_training_set():
    data = toy_data()
    torch.manual_seed(0)
    model = cnn(1, 3, width=4)
    model.train()
    classifier_before = snapshot(model)
    aug = BGADL(gan_epochs=2)
    assert aug.extra_training_data() is None  # nothing generated before the first acquisition
    ctx = context(model, data)  # labeled: 0..5
    aug.begin_iteration(ctx, torch.arange(10, 14))
    nets = (aug.encoder, aug.generator, aug.discriminator)
    after_first = snapshot(*nets)
    x, y = aug.extra_training_data()
    # one sample per acquired point, its label
    assert x.shape == (4, 1, 8, 8) and torch.equal(y, data.y_train[10:14])
    lo, hi = pixel_range(data.x_train)
    # G's [0, 1] mapped back to the data's normalisation
    assert bool(((x >= lo - 1e-5) & (x <= hi + 1e-5)).all())
    m = aug.metrics()
    assert m["n_synthetic"] == 4 and all(m[k] > 0 for k in ("enc_loss", "gen_loss", "disc_loss"))
    ctx.labeled = torch.cat([ctx.labeled, torch.arange(10, 14)])
    aug.begin_iteration(ctx, torch.arange(20, 24))
    assert (
        aug.encoder,
        aug.generator,
        aug.discriminator,
    ) == nets  # warm start: the same networks ...
    # ... trained further
    assert any(not torch.equal(a, b) for a, b in zip(after_first, snapshot(*nets)))
    # 2 epochs x 1 batch, twice
    assert all(
        s["step"] == 2 * 2 for s in aug.optimizers["generator"].state_dict()["state"].values()
    )
    x2, y2 = aug.extra_training_data()
    assert torch.equal(x2[:4], x) and torch.equal(
        y2, torch.cat([data.y_train[10:14], data.y_train[20:24]])
    )
    assert aug.metrics()["n_synthetic"] == 8
    # C is frozen while the GAN trains
    assert all(torch.equal(a, b) for a, b in zip(classifier_before, snapshot(model)))
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_generator_is_trained_against_the_frozen_classifier():
    # The ACGAN term CE(C(G(z, y)), y) reaches G through the classifier: with it, G's loss uses C.
    data = toy_data()
    model = cnn(1, 3, width=4)
    calls = []
    model.register_forward_hook(
        lambda module, inputs, output: calls.append(inputs[0].requires_grad)
    )
    BGADL(gan_epochs=1).begin_iteration(context(model, data), torch.arange(10, 14))
    assert calls and all(calls)  # generated images, with a graph back to G


def test_non_finite_gan_loss_undoes_the_update_and_adds_no_sample(caplog):
    data = toy_data()
    model = cnn(1, 3, width=4)
    ctx = context(model, data)
    aug = BGADL(gan_epochs=1)
    aug.begin_iteration(ctx, torch.arange(10, 14))
    nets = (aug.encoder, aug.generator, aug.discriminator)
    before, state_before = (
        snapshot(*nets),
        aug.optimizers["encoder"].state_dict()["state"][0]["exp_avg"].clone(),
    )
    hook = aug.encoder.register_forward_hook(
        lambda module, inputs, out: (out[0] * float("nan"), out[1])
    )
    with caplog.at_level(logging.WARNING):
        aug.begin_iteration(ctx, torch.arange(20, 24))
    hook.remove()
    assert "non-finite" in caplog.text
    after = snapshot(*nets)
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # the diverged update is undone
    assert torch.equal(aug.optimizers["encoder"].state_dict()["state"][0]["exp_avg"], state_before)
    assert aug.extra_training_data()[0].shape[0] == 4 and aug.metrics() == {"n_synthetic": 4}
    aug.begin_iteration(ctx, torch.arange(30, 34))  # and the next iteration works again
    assert aug.metrics()["n_synthetic"] == 8 and torch.isfinite(aug.extra_training_data()[0]).all()


def test_colour_or_size_mismatch_is_a_config_error():
    aug = BGADL(gan_epochs=1)
    aug.begin_iteration(context(cnn(1, 3, width=4), toy_data()), torch.arange(10, 14))
    colour = fashion_sized(channels=3, size=8, classes=3)
    with pytest.raises(
        ConfigError, match=r"1x8x8 images .* 3x8x8 images .*grayscale/colour.*fresh run directory"
    ):
        aug.begin_iteration(context(cnn(3, 3, width=4), colour), torch.arange(10, 14))
    with pytest.raises(ConfigError, match="divisible by 4"):
        BGADL().begin_iteration(
            context(cnn(1, 10, width=4), fashion_sized(size=30)), torch.arange(10, 14)
        )
    with pytest.raises(ConfigError, match="query must be >= 2"):
        BGADL().choose_query(
            MaxEntropy(), context(cnn(1, 3, width=4), toy_data()), torch.arange(6, 30), 1
        )
    with pytest.raises(ConfigError, match="augment.width"):
        BGADL(width=0)
