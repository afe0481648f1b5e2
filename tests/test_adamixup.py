"""Ent w. AdaMixup: policy region generator and intrusion discriminator, both trained (METHODS.md §8)."""
import pytest
import torch
import torch.nn.functional as F

from ladarun.acquisition import MaxEntropy
from ladarun.augment import AdaMixup
from ladarun.augment.adamixup import (
    IntrusionDiscriminator,
    PolicyRegionGenerator,
    adamixup_losses,
    mixing_lambda,
)
from ladarun.augment.mixing import mix
from ladarun.augment.policy import count_parameters
from ladarun.data.base import ActiveDataset
from ladarun.errors import ConfigError
from ladarun.models import cnn, resnet18

from test_infomixup import context, trained_model
from test_loop import toy_data


def test_network_sizes_match_the_paper():
    assert count_parameters(IntrusionDiscriminator(512, 10)) == 5_152  # the paper's "5K"
    assert count_parameters(PolicyRegionGenerator(1, 28)) == 145_715  # not counted in Table 1
    assert count_parameters(PolicyRegionGenerator(3, 32)) == 228_211
    assert PolicyRegionGenerator(1, 8)(torch.randn(2, 1, 8, 8)).shape == (2, 3)  # small images are padded


def test_the_discriminator_is_sized_from_the_classifier_embedding():
    data = toy_data()
    for model in (cnn(1, 3, width=4), resnet18(1, 3)):
        aug = AdaMixup()
        aug.begin_iteration(context(model, data), torch.arange(6, 16))
        assert aug.discriminator.embed_dim == model.embed_dim
        assert aug.aux_parameters() == (model.embed_dim + 1) * 3 + (3 + 1) * 2  # Linear(d, C), Linear(C, 2)
    assert aug.aux_parameters() == 512 * 3 + 3 + 3 * 2 + 2


def test_lambda_stays_in_its_region_within_0_and_1():
    torch.manual_seed(0)
    policy = PolicyRegionGenerator(1, 28)
    x = torch.randn(256, 1, 28, 28)
    for std in (1e-3, 1.0, 100.0):  # from the initial near-uniform region to saturated softmaxes
        torch.nn.init.normal_(policy.fc2.weight, std=std)
        region = policy(x)
        u = torch.rand(256)
        lam = mixing_lambda(region, u)
        assert torch.allclose(region.sum(1), torch.ones(256))
        assert bool(((lam >= region[:, 0] - 1e-6) & (lam <= region[:, 0] + region[:, 1] + 1e-6)).all())
        assert bool(((lam >= 0) & (lam <= 1)).all())
    for u in (torch.zeros(256), torch.ones(256)):  # the interval's ends
        lam = mixing_lambda(region, u)
        assert bool(((lam >= 0) & (lam <= 1 + 1e-6)).all())


def test_losses_weight_each_sample_by_its_own_lambda():
    data = toy_data()
    torch.manual_seed(0)
    model = cnn(1, 3, width=4).eval()  # eval: per-sample outputs, so the hand computation can split the batch
    policy, disc = PolicyRegionGenerator(1, 8).eval(), IntrusionDiscriminator(model.embed_dim, 3)
    torch.nn.init.normal_(policy.fc2.weight, std=1.0)  # lambdas spread out
    x1, x2, xu = data.x_train[[0, 1, 2]], data.x_train[[4, 5, 3]], data.x_train[[6, 7]]
    y1, y2 = data.y_train[[0, 1, 2]], data.y_train[[4, 5, 3]]
    assert (y1 != y2).all()
    cls_sum, intrusion, lam = adamixup_losses(model, policy, disc, x1, y1, x2, y2, xu, 3)
    assert lam.shape == (3,) and bool(((lam >= 0) & (lam <= 1)).all()) and lam.std() > 0.01
    logits_mix, logits_1 = model(mix(x1, x2, lam)), model(x1)
    ce_mix_1 = F.cross_entropy(logits_mix, y1, reduction="none")
    ce_mix_2 = F.cross_entropy(logits_mix, y2, reduction="none")
    expected = (lam * ce_mix_1 + (1 - lam) * ce_mix_2).sum() + F.cross_entropy(logits_1, y1, reduction="sum")
    torch.testing.assert_close(cls_sum, expected)
    # The official code's batch-mean weighting gives another number: the test can tell them apart.
    official = (lam * ce_mix_1.mean() + (1 - lam) * ce_mix_2.mean()).sum() + F.cross_entropy(logits_1, y1, reduction="sum")
    assert abs(float((official - expected).detach())) > 1e-4
    embeddings = model.embed(torch.cat([mix(x1, x2, lam), x1, xu]))
    is_original = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    torch.testing.assert_close(intrusion, F.cross_entropy(disc(embeddings), is_original))


def test_selection_is_the_acquisition_alone():
    data = toy_data()
    model = trained_model(data, epochs=3)
    candidates = torch.arange(6, 66)
    plain = MaxEntropy().select(context(model, data), candidates, 10)
    assert sorted(AdaMixup().acquire(MaxEntropy(), context(model, data), candidates, 10).tolist()) == sorted(plain.tolist())
    with pytest.raises(ConfigError, match="query must be >= 2"):
        AdaMixup().acquire(MaxEntropy(), context(model, data), candidates, 1)


def test_policy_and_discriminator_are_trained_and_persist_across_iterations():
    data = toy_data()
    torch.manual_seed(0)
    model = cnn(1, 3, width=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    aug = AdaMixup()
    assert aug.extra_step(model, opt) is None  # the initial training: nothing acquired yet
    aug.begin_iteration(context(model, data), torch.arange(6, 16))
    policy, disc = aug.policy, aug.discriminator
    snapshot = lambda *nets: [p.detach().clone() for n in nets for p in n.parameters()]  # noqa: E731
    policy_0, disc_0, model_0 = snapshot(policy), snapshot(disc), snapshot(model)
    for _ in range(3):
        loss_sum, n = aug.extra_step(model, opt)
        assert n == 10 and torch.isfinite(loss_sum)  # 5 mixes + 5 originals
    changed = lambda before, *nets: [not torch.equal(a, b) for a, b in zip(before, snapshot(*nets))]  # noqa: E731
    assert all(changed(policy_0, policy))  # every policy tensor moved: gradients reach pi through lambda
    assert all(changed(disc_0, disc))
    assert any(changed(model_0, model))
    m = aug.metrics()
    assert set(m) == set(AdaMixup.metric_names) and 0 <= m["lambda_mean"] <= 1
    assert m["policy_loss"] > m["intrusion_loss"] > 0  # policy_loss = L_cls + L_intr
    aug.begin_iteration(context(model, data), torch.arange(16, 26))  # the next iteration
    assert aug.policy is policy and aug.discriminator is disc  # created once, not re-created
    assert all(s["step"] == 3 for s in aug.optimizer.state_dict()["state"].values())  # the same optimizer state


def test_state_round_trip_and_shape_mismatch():
    data = toy_data()
    model = cnn(1, 3, width=4)
    aug = AdaMixup()
    aug.begin_iteration(context(model, data), torch.arange(6, 16))
    aug.extra_step(model, torch.optim.Adam(model.parameters()))
    restored = AdaMixup()
    restored.load_state_dict(aug.state_dict())
    for a, b in zip(aug.policy.state_dict().values(), restored.policy.state_dict().values()):
        assert torch.equal(a, b)
    assert restored.optimizer.state_dict()["state"].keys() == aug.optimizer.state_dict()["state"].keys()
    colour = ActiveDataset("colour", torch.randn(40, 3, 8, 8), torch.arange(40) % 3, torch.randn(6, 3, 8, 8), torch.arange(6) % 3, 3)
    with pytest.raises(ConfigError, match=r"built for 1x8x8 images .* 3x8x8 images.*fresh run directory"):
        restored.begin_iteration(context(cnn(3, 3, width=4), colour), torch.arange(6, 16))
