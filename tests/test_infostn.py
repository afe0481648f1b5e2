"""InfoSTN (LADA_EntSTN) and its CE-trained ablation LADA_EntSTN^fixed (docs/methods.md §10)."""

import logging

import pytest
import torch
import torch.nn.functional as F

from helpers import context, toy_data, trained_model
from ladarun.acquisition import MaxEntropy
from ladarun.acquisition.base import Acquisition, top_k
from ladarun.augment import FixedInfoSTN, InfoSTN
from ladarun.augment import infostn as infostn_module
from ladarun.augment.policy import count_parameters
from ladarun.augment.stn import SpatialTransformer
from ladarun.data.base import ActiveDataset
from ladarun.errors import ConfigError
from ladarun.models import cnn


def test_stn_sizes_match_the_paper():
    # the paper's "STN 5K" (Fashion-MNIST)
    assert count_parameters(SpatialTransformer(1, 28)) == 5_520
    assert count_parameters(SpatialTransformer(3, 32)) == 8_544
    # small images are padded
    assert SpatialTransformer(1, 8)(torch.randn(2, 1, 8, 8)).shape == (
        2,
        1,
        8,
        8,
    )


@pytest.mark.parametrize("shape", [(1, 28), (3, 32), (1, 8)])
@pytest.mark.parametrize("bound", [0.25, None])
def test_identity_initialised_stn_returns_its_input(shape, bound):
    channels, size = shape
    stn = SpatialTransformer(channels, size, bound=bound)
    x = torch.randn(4, channels, size, size)
    theta = stn.theta(x)
    torch.testing.assert_close(theta, torch.eye(2, 3).expand(4, 2, 3))
    torch.testing.assert_close(stn(x), x, atol=1e-4, rtol=0)
    assert stn.distance_from_identity(theta).abs().max() < 1e-6


def test_bound_keeps_the_transform_near_the_identity():
    torch.manual_seed(0)
    bounded, free = SpatialTransformer(1, 28, bound=0.25), SpatialTransformer(1, 28, bound=None)
    for stn in (bounded, free):
        torch.nn.init.normal_(stn.theta_head.weight, std=10.0)  # wildly trained
    x = torch.randn(8, 1, 28, 28)
    assert (bounded.theta(x) - torch.eye(2, 3)).abs().max() <= 0.25
    assert (free.theta(x) - torch.eye(2, 3)).abs().max() > 1.0


def mean_entropy(model, x):
    with torch.no_grad():
        return float(MaxEntropy().score_logits(model(x)).mean())


def test_infostn_training_raises_the_entropy_of_transformed_pool_points():
    data = toy_data(n_train=300, classes=3)
    model = trained_model(data)
    ctx = context(model, data)
    candidates = torch.arange(100, 300)
    torch.manual_seed(0)
    aug = InfoSTN(epochs=10, batch_size=50, lr=1e-2)
    aug.choose_query(MaxEntropy(), ctx, candidates, 10)
    x = data.x_train[candidates]
    before = mean_entropy(model, x)  # the identity-initialised STN returns x itself
    after = mean_entropy(model, aug._stn(x).detach())
    print(
        f"mean entropy of the candidates: identity {before:.4f} bits, trained InfoSTN {after:.4f} bits"
    )
    assert after > before + 0.05, (before, after)
    m = aug.metrics()
    assert m["stn_loss"] == pytest.approx(-after, abs=0.1)  # -mean alpha(T(x)) in the best epoch
    assert 0 < m["theta_dist"] <= 0.25 * 6**0.5 + 1e-5  # moved, but within the bound
    assert aug.aux_parameters() == count_parameters(SpatialTransformer(1, 8))


def test_ce_trained_stn_lowers_the_labeled_loss():
    # The labeled images are shifted copies of what the classifier learned from: the STN the
    # conventional objective (Eq. 1) trains should learn to shift them back.
    data = toy_data(n_train=300, classes=3)
    model = trained_model(data)
    labeled = torch.arange(1, 300, 4)[:60]
    shift = torch.tensor([[1.0, 0.0, 0.15], [0.0, 1.0, -0.1]]).expand(60, 2, 3)
    x_train = data.x_train.clone()
    x_train[labeled] = F.grid_sample(
        x_train[labeled],
        F.affine_grid(shift, [60, 1, 8, 8], align_corners=False),
        align_corners=False,
    )
    shifted = ActiveDataset("shifted", x_train, data.y_train, data.x_test, data.y_test, 3)
    ctx = context(model, shifted)
    ctx.labeled = labeled
    torch.manual_seed(0)
    aug = FixedInfoSTN(epochs=10, batch_size=20, lr=1e-2)
    aug.choose_query(MaxEntropy(), ctx, torch.arange(2, 300, 4)[:50], 10)
    x, y = x_train[labeled], data.y_train[labeled]
    with torch.no_grad():
        before = float(F.cross_entropy(model(x), y))
        after = float(F.cross_entropy(model(aug._stn(x)), y))
    print(f"labeled-set cross-entropy: identity {before:.4f}, CE-trained STN {after:.4f}")
    assert after < 0.8 * before, (before, after)
    assert aug.metrics()["stn_loss"] == pytest.approx(after, abs=0.05)


@pytest.mark.parametrize("augment", [InfoSTN, FixedInfoSTN])
def test_selection_is_the_top_of_the_look_ahead_score(augment):
    data = toy_data()
    model = trained_model(data, epochs=3)
    ctx = context(model, data)
    candidates = torch.arange(6, 86)
    aug = augment(epochs=2, batch_size=40, lr=1e-2)
    chosen = aug.choose_query(MaxEntropy(), ctx, candidates, 10)
    x = data.x_train[candidates]
    with torch.no_grad():
        # Eq. 7
        score = MaxEntropy().score_logits(model(x)) + MaxEntropy().score_logits(model(aug._stn(x)))
    expected = candidates[torch.topk(score, 10).indices]
    assert sorted(chosen.tolist()) == sorted(expected.tolist())
    with torch.no_grad():
        virtual = MaxEntropy().score_logits(model(aug._stn(data.x_train[chosen])))
    assert aug.metrics()["virtual_score"] == pytest.approx(float(virtual.mean()), abs=1e-5)


def test_classifier_is_frozen_during_stn_training_and_restored_after():
    data = toy_data()
    model = cnn(1, 3, width=4)
    model.train()
    params = [p.detach().clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    for augment in (InfoSTN(epochs=2, batch_size=20), FixedInfoSTN(epochs=2, batch_size=20)):
        augment.choose_query(MaxEntropy(), context(model, data), torch.arange(6, 66), 10)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    # eval mode: BN statistics untouched
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_training_steps_on_the_transformed_acquired_points_with_hard_labels(monkeypatch):
    data = toy_data()
    model = trained_model(data, epochs=3)
    ctx = context(model, data)
    aug = InfoSTN(epochs=2, batch_size=40, lr=1e-2)
    assert aug.extra_step(model, None) is None  # nothing acquired yet (the initial training)
    chosen = aug.choose_query(MaxEntropy(), ctx, torch.arange(6, 86), 10)
    aug.begin_iteration(ctx, chosen)
    stn_before = [p.detach().clone() for p in aug._stn.parameters()]
    seen = []

    def spy(model, optimizer, x, y):
        seen.append((x.clone(), y.clone()))
        return torch.zeros(()), y.numel()

    monkeypatch.setattr(infostn_module, "hard_label_step", spy)
    assert aug.extra_step(model, None)[1] == 10
    x, y = seen[0]
    assert not torch.allclose(x, data.x_train[chosen])  # transformed ...
    # ... by this iteration's STN
    torch.testing.assert_close(x, aug._stn(data.x_train[chosen]).detach())
    assert torch.equal(y, data.y_train[chosen])  # hard labels: the transform preserves the class
    monkeypatch.undo()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss, n = aug.extra_step(model, opt)
    assert n == 10 and torch.isfinite(loss)
    # the classifier learns
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # phi stays frozen
    assert all(torch.equal(a, b) for a, b in zip(stn_before, aug._stn.parameters()))


class NaNWhileTraining(Acquisition):
    """Entropy when scoring, NaN while the STN trains (gradients on)."""

    per_instance = True

    def score_inputs(self, ctx, x):
        score = MaxEntropy().score_logits(ctx.model(x))
        return score * float("nan") if torch.is_grad_enabled() else score


@pytest.mark.parametrize("augment", [InfoSTN, FixedInfoSTN])
def test_non_finite_stn_loss_drops_the_augmentation_for_the_iteration(caplog, augment):
    data = toy_data()
    model = trained_model(data, epochs=3)
    candidates = torch.arange(6, 86)
    aug = augment(epochs=2, batch_size=40)
    if (
        augment is FixedInfoSTN
    ):  # its loss is the classifier's CE: poison the classifier's output instead
        aug.stn_loss = lambda acquisition, ctx, x, rows: torch.full(
            (), float("nan"), requires_grad=True
        )
    with caplog.at_level(logging.WARNING):
        chosen = aug.choose_query(NaNWhileTraining(), context(model, data), candidates, 10)
    assert "non-finite" in caplog.text
    with torch.no_grad():
        plain = candidates[
            top_k(
                MaxEntropy().score_logits(model(data.x_train[candidates])),
                10,
                torch.Generator().manual_seed(0),
            )
        ]
    assert sorted(chosen.tolist()) == sorted(plain.tolist())  # the acquisition alone
    aug.begin_iteration(context(model, data), chosen)
    assert aug.extra_step(model, torch.optim.SGD(model.parameters(), lr=0.1)) is None
    assert aug.metrics() == {}


def test_images_too_small_for_the_localisation_net_are_a_config_error():
    tiny = ActiveDataset(
        "tiny",
        torch.randn(40, 1, 3, 3),
        torch.arange(40) % 2,
        torch.randn(4, 1, 3, 3),
        torch.arange(4) % 2,
        2,
    )
    with pytest.raises(ConfigError, match="too small for the STN"):
        InfoSTN().choose_query(
            MaxEntropy(), context(cnn(1, 2, width=4), tiny), torch.arange(6, 30), 4
        )


def test_look_ahead_stn_needs_a_per_instance_score():
    class BatchOnly(Acquisition):
        per_instance = False

    for aug in (InfoSTN(), FixedInfoSTN()):
        with pytest.raises(ConfigError, match="acquisition=ent, var, margin, vaal or bald"):
            aug.check_compatible(BatchOnly(), "coreset")
    with pytest.raises(ConfigError, match="augment.bound"):
        InfoSTN(bound=0)
