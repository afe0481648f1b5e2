"""LADA's InfoMixup, its fixed ablation and the pipelined Manifold Mixup baseline (docs/methods.md §7, §9)."""

import logging

import pytest
import torch
import torch.nn.functional as F

from helpers import (
    CPU,
    context,
    crash_at_evaluation,
    read_csv,
    tiny_protocol,
    toy_data,
    toy_run,
    trained_model,
    without_timings,
)
from ladarun.acquisition import MaxEntropy, VarRatio
from ladarun.acquisition.base import Acquisition, PairScorer
from ladarun.augment import FixedInfoMixup, InfoMixup, ManifoldMixup
from ladarun.augment import infomixup as infomixup_module
from ladarun.augment import manifold_mixup as manifold_mixup_module
from ladarun.augment.mixing import virtual_step
from ladarun.augment.policy import LambdaNet, count_parameters
from ladarun.errors import ConfigError
from ladarun.loop import Experiment, RunOptions, run_active_learning
from ladarun.models import cnn, resnet18


def test_policy_network_sizes_match_the_paper():
    assert count_parameters(LambdaNet(2 * 64, 28)) == 77_063  # the paper's "77K" (Fashion-MNIST)
    assert count_parameters(LambdaNet(2 * 64, 32)) == 98_183
    tau = LambdaNet(128, 28)(torch.randn(3, 128, 28, 28))
    assert tau.shape == (3, 1) and bool(((tau > 0) & (tau < 1)).all())  # sigmoid: tau in (0, 1)
    assert bool(
        (LambdaNet(128, 28, tau_activation="softplus")(torch.randn(3, 128, 28, 28)) > 0).all()
    )
    with pytest.raises(ConfigError, match="tau_activation"):
        LambdaNet(128, 28, tau_activation="relu")


def test_resnet_stage_maps_feed_the_policy_at_both_mixing_layers():
    model = resnet18(in_channels=1, num_classes=10).eval()
    x = torch.randn(2, 1, 28, 28)
    for k in (1, 2):
        h = model.features(x, k)
        assert h.shape == (2, 64, 28, 28)
        assert LambdaNet(2 * h.shape[1], h.shape[-1])(torch.cat([h, h], 1)).shape == (2, 1)


def test_policy_training_raises_the_mixed_entropy_above_the_initial_policy():
    data = toy_data(n_train=300, classes=3)
    model = trained_model(data)
    ctx = context(model, data)
    first, second = torch.arange(0, 200, 2), torch.arange(1, 200, 2)
    h1, h2 = (
        model.features(data.x_train[first], 1).detach(),
        model.features(data.x_train[second], 1).detach(),
    )
    scorer = MaxEntropy().pair_scorer(ctx, first, second, 1, h1, h2)
    aug = InfoMixup(layers=[1], policy_lr=1e-3, policy_epochs=10, policy_batch_size=25)
    torch.manual_seed(3)
    initial = LambdaNet(2 * h1.shape[1], h1.shape[-1])  # what pair_taus starts from with this seed
    with torch.no_grad():
        tau_initial = initial(torch.cat([h1, h2], 1)).squeeze(1)
    torch.manual_seed(3)
    tau_star, loss = aug.pair_taus(scorer, h1, h2, ctx.generator)

    def mean_mixed_entropy(tau):
        torch.manual_seed(11)  # common random numbers for a fair comparison
        with torch.no_grad():
            lam = torch.distributions.Beta(tau, tau).sample((400,))
            return float(scorer.mixed(lam, torch.arange(tau.numel())).mean())

    before, after = mean_mixed_entropy(tau_initial), mean_mixed_entropy(tau_star)
    print(f"mean mixed entropy: initial policy {before:.4f} bits, trained {after:.4f} bits")
    assert after > before + 0.01, (before, after)
    assert loss == pytest.approx(-after, abs=0.1)  # the reported loss is -mean alpha_mix per pair


class HandScorer(PairScorer):
    """Known scores: base[i] + bonus[i], whatever lambda is."""

    def __init__(self, base, bonus):
        self._base, self.bonus = base, bonus

    def base(self):
        return self._base

    def mixed(self, lam, rows):
        return self.bonus[rows].expand_as(lam) + 0.0 * lam


class HandAcquisition(Acquisition):
    per_instance = True

    def __init__(self, base, bonus):
        self.base, self.bonus, self.prepared = base, bonus, 0
        self.pairs = None

    def prepare(self, ctx):
        self.prepared += 1

    def pair_scorer(self, ctx, first, second, k, h_first, h_second):
        self.pairs = (first.clone(), second.clone())
        return HandScorer(self.base, self.bonus)


@pytest.mark.parametrize(
    "augment", [FixedInfoMixup(layers=[1]), InfoMixup(layers=[1], policy_epochs=1)]
)
def test_selected_pairs_are_the_top_of_eq_15_and_both_members_are_labeled(augment):
    data = toy_data()
    ctx = context(cnn(1, 3, width=4), data)
    candidates = torch.arange(40, 60)  # 10 pairs: (40, 50), (41, 51), ...
    base = torch.tensor([0.1, 0.9, 0.2, 0.3, 0.8, 0.0, 0.5, 0.1, 0.2, 0.4])
    # the mixed term lifts pair 3
    bonus = torch.tensor([0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    acq = HandAcquisition(base, bonus)
    chosen = augment.choose_query(acq, ctx, candidates, 6)  # 3 pairs
    assert acq.prepared == 1
    assert acq.pairs[0].tolist() == list(range(40, 50)) and acq.pairs[1].tolist() == list(
        range(50, 60)
    )
    # totals: pair 3 -> 1.2, pair 1 -> 0.9, pair 4 -> 0.8; then pair 6 -> 0.5
    assert sorted(chosen.tolist()) == sorted([41, 51, 43, 53, 44, 54])
    # mean bonus of the selected pairs
    assert augment.metrics()["virtual_score"] == pytest.approx(0.3)


def test_no_gradient_reaches_the_classifier_during_policy_training():
    data = toy_data()
    model = cnn(1, 3, width=4)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    ctx = context(model, data)
    InfoMixup(layers=[1, 2], policy_epochs=2, policy_batch_size=10).choose_query(
        MaxEntropy(), ctx, torch.arange(6, 66), 10
    )
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # eval mode: BN stats untouched
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    # restored afterwards
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_fixed_variant_has_no_policy(monkeypatch):
    def no_policy(*args, **kwargs):
        raise AssertionError("the fixed variant must not build a policy network")

    monkeypatch.setattr(infomixup_module, "LambdaNet", no_policy)
    data = toy_data()
    aug = FixedInfoMixup(layers=[2])
    aug.choose_query(MaxEntropy(), context(cnn(1, 3, width=4), data), torch.arange(6, 46), 4)
    assert aug.aux_parameters() == 0
    assert aug.metrics()["tau_mean"] == 2.0 and "policy_loss" not in aug.metrics()
    assert aug._selected[2].tolist() == [2.0, 2.0]


def test_virtual_step_uses_the_mixed_soft_labels():
    data = toy_data()
    torch.manual_seed(0)
    model = cnn(1, 3, width=4)
    first, second, lam = (
        torch.tensor([0, 1, 2]),
        torch.tensor([4, 5, 3]),
        torch.tensor([0.25, 0.5, 0.9]),
    )
    assert (data.y_train[first] != data.y_train[second]).all()
    reference = cnn(1, 3, width=4)
    reference.load_state_dict(model.state_dict())
    reference.train()
    h = lam.view(-1, 1, 1, 1) * reference.features(data.x_train[first], 2) + (
        1 - lam.view(-1, 1, 1, 1)
    ) * reference.features(data.x_train[second], 2)
    logp = F.log_softmax(reference.forward_from(h, 2), 1)
    soft = lam[:, None] * F.one_hot(data.y_train[first], 3) + (1 - lam[:, None]) * F.one_hot(
        data.y_train[second], 3
    )
    expected = -(soft * logp).sum()
    hard_first = F.nll_loss(logp, data.y_train[first], reduction="sum")
    loss_sum, n = virtual_step(
        model, torch.optim.SGD(model.parameters(), lr=0.1), data, first, second, lam, 2
    )
    assert n == 3
    torch.testing.assert_close(loss_sum, expected.detach())
    assert not torch.isclose(loss_sum, hard_first)  # not the first member's hard label


@pytest.mark.parametrize("quirk", [False, True])
def test_faithful_quirks_leaks_the_previous_gradient_into_the_mixed_step(quirk):
    data = toy_data()
    torch.manual_seed(0)
    model = cnn(1, 3, width=4)
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]
    leaked = [torch.full_like(p, 0.5) for p in params]
    for p, g in zip(params, leaked):
        p.grad = g.clone()  # what the last labeled batch left behind
    lam = torch.tensor([0.3, 0.6])
    # Reference gradient of the mixed loss alone, from a copy.
    ref = cnn(1, 3, width=4)
    ref.load_state_dict(model.state_dict())
    virtual_step(
        ref,
        torch.optim.SGD(ref.parameters(), lr=0.0),
        data,
        torch.tensor([0, 1]),
        torch.tensor([4, 5]),
        lam,
        1,
    )
    pure = [p.grad.clone() for p in ref.parameters()]
    virtual_step(
        model,
        torch.optim.SGD(params, lr=1.0),
        data,
        torch.tensor([0, 1]),
        torch.tensor([4, 5]),
        lam,
        1,
        zero_grad=not quirk,
    )
    for p, p0, g, leak in zip(params, start, pure, leaked):
        torch.testing.assert_close(p0 - p.detach(), g + leak if quirk else g)


def test_non_finite_policy_loss_stops_training_and_keeps_the_last_finite_tau(caplog):
    class Exploding(PairScorer):
        calls = 0

        def base(self):
            return torch.zeros(20)

        def mixed(self, lam, rows):
            Exploding.calls += 1
            bad = Exploding.calls > 4  # epochs 1-2 are finite (2 batches each), epoch 3 is not
            return (lam * (float("nan") if bad else 1.0)).sum(0, keepdim=True).expand_as(lam)

    aug = InfoMixup(layers=[1], policy_epochs=5, policy_batch_size=10)
    h = torch.randn(20, 4, 8, 8)
    with caplog.at_level(logging.WARNING):
        tau, loss = aug.pair_taus(Exploding(), h, h.clone(), torch.Generator().manual_seed(0))
    assert "non-finite" in caplog.text
    assert torch.isfinite(tau).all() and tau.shape == (20,)
    assert loss is not None and loss == loss  # the last finite epoch's loss, not NaN
    assert Exploding.calls == 6  # stopped in epoch 3 instead of running all 5


def test_edge_lambdas_do_not_poison_the_policy_gradient():
    # Tiny tau puts Beta samples at exactly 0 or 1, where the reparameterisation gradient blows up.
    class Linear(PairScorer):
        def base(self):
            return torch.zeros(50)

        def mixed(self, lam, rows):
            return lam

    aug = InfoMixup(layers=[1], policy_epochs=3, policy_batch_size=25, tau_activation="softplus")
    h = torch.randn(50, 2, 8, 8) * 1e3
    tau, loss = aug.pair_taus(Linear(), h, -h, torch.Generator().manual_seed(0))
    assert torch.isfinite(tau).all() and loss is not None


def test_look_ahead_needs_a_per_instance_score():
    class BatchOnly(Acquisition):
        per_instance = False

    for aug in (InfoMixup(), FixedInfoMixup()):
        with pytest.raises(ConfigError, match="acquisition=ent, var, margin, vaal or bald"):
            aug.check_compatible(BatchOnly(), "coreset")
    InfoMixup().check_compatible(VarRatio(), "var")


def test_pairs_need_an_even_query():
    data = toy_data()
    with pytest.raises(ConfigError, match="even"):
        InfoMixup().choose_query(
            MaxEntropy(), context(cnn(1, 3, width=4), data), torch.arange(6, 46), 5
        )


def test_manifold_mixup_selects_by_the_acquisition_alone_and_mixes_the_new_points(monkeypatch):
    data = toy_data()
    model = trained_model(data, epochs=3)
    ctx = context(model, data)
    candidates = torch.arange(6, 66)
    plain = MaxEntropy().select(context(model, data), candidates, 10)
    aug = ManifoldMixup(layers=[1, 2])
    chosen = aug.choose_query(MaxEntropy(), ctx, candidates, 10)
    assert sorted(chosen.tolist()) == sorted(plain.tolist())
    m = aug.metrics()
    # log2(3) bits max
    assert m["mix_layer"] in (1, 2) and m["tau_mean"] == 2.0 and 0 <= m["virtual_score"] <= 2
    aug.begin_iteration(ctx, chosen)
    calls = []

    def spy(model, optimizer, data, first, second, lam, k, zero_grad=True):
        calls.append((first.clone(), second.clone(), lam.clone(), k))
        return torch.zeros(()), first.numel()

    monkeypatch.setattr(manifold_mixup_module, "virtual_step", spy)
    aug.extra_step(model, None)
    aug.extra_step(model, None)
    for first, second, lam, k in calls:
        pairs = torch.cat([first, second])
        # 5 disjoint pairs of the new points
        assert sorted(pairs.tolist()) == sorted(chosen.tolist())
        assert lam.shape == (5,) and bool(((lam > 0) & (lam < 1)).all()) and k == m["mix_layer"]
    # re-paired
    assert not torch.equal(calls[0][0], calls[1][0]) or not torch.equal(calls[0][1], calls[1][1])


ROWS = {
    "LADA_EntMix": (MaxEntropy, InfoMixup),
    "LADA_EntMix^fixed": (MaxEntropy, FixedInfoMixup),
    "LADA_VarMix": (VarRatio, InfoMixup),
    "LADA_VarMix^fixed": (VarRatio, FixedInfoMixup),
    "Ent w. ManifoldMixup": (MaxEntropy, ManifoldMixup),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_smoke_run_of_each_row_writes_its_csv(tmp_path, row):
    acquisition, augment = ROWS[row]
    aug = (
        augment(layers=[1, 2])
        if augment is not InfoMixup
        else augment(layers=[1, 2], policy_epochs=2)
    )
    toy_run(tmp_path, acquisition(), aug, query=4, pool_subset=20)
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["n_labeled"]) for r in rows] == [6, 10, 14, 18]
    for r in rows[1:]:
        assert (
            int(r["mix_layer"]) in (1, 2) and float(r["tau_mean"]) > 0 and r["virtual_score"] != ""
        )
        assert (r.get("policy_loss", "") != "") == (augment is InfoMixup)


def test_infomixup_run_resumes_exactly(tmp_path, monkeypatch):
    def go(out, **kw):
        options = RunOptions(progress=False, **kw)
        augment = InfoMixup(policy_epochs=2)
        return toy_run(out, None, augment, seed=1, options=options, query=4, pool_subset=20)

    go(tmp_path / "straight")
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            go(tmp_path / "resumed")
    go(tmp_path / "resumed")
    resumed, straight = (
        read_csv(tmp_path / "resumed" / "metrics.csv"),
        read_csv(tmp_path / "straight" / "metrics.csv"),
    )
    assert without_timings(resumed) == without_timings(straight)


def _entmix_run(out):
    experiment = Experiment(
        data=toy_data(),
        model_factory=cnn,
        acquisition=MaxEntropy(),
        protocol=tiny_protocol(query=4, pool_subset=20),
        seed=3,
        augment=InfoMixup(layers=[1, 2], policy_epochs=2),
    )
    return run_active_learning(experiment, out, CPU, RunOptions(progress=False))


def test_tau_spread_over_the_pairs_is_recorded_and_draws_nothing(tmp_path, monkeypatch):
    """tau_std, tau_min and tau_max describe tau* over every pair the policy scored; computing them
    reads no random stream, so every other column equals a run that does not record them."""
    _entmix_run(tmp_path / "with")
    with monkeypatch.context() as m:
        m.setattr(infomixup_module, "tau_spread", lambda tau: {})
        _entmix_run(tmp_path / "without")
    recorded = read_csv(tmp_path / "with" / "metrics.csv")
    plain = read_csv(tmp_path / "without" / "metrics.csv")
    spread = ("tau_std", "tau_min", "tau_max")
    assert without_timings([{k: v for k, v in r.items() if k not in spread} for r in recorded]) == (
        without_timings([{k: v for k, v in r.items() if k not in spread} for r in plain])
    )
    assert (tmp_path / "with" / "queries.csv").read_text() == (
        tmp_path / "without" / "queries.csv"
    ).read_text()
    for r in recorded[1:]:
        low, mean, high, std = (float(r[k]) for k in ("tau_min", "tau_mean", "tau_max", "tau_std"))
        assert 0 < low <= mean <= high < 1 and std >= 0  # sigmoid: tau* in (0, 1)
        assert std <= (high - low) and (std > 0) == (high > low)
    assert all(r["tau_std"] == "" for r in plain)


def test_tau_spread_is_the_spread_of_the_tensor():
    tau = torch.tensor([0.2, 0.4, 0.9])
    spread = infomixup_module.tau_spread(tau)
    assert spread == pytest.approx({"tau_std": float(tau.std()), "tau_min": 0.2, "tau_max": 0.9})
    assert spread["tau_std"] == pytest.approx(0.3605551, rel=1e-6)  # ddof=1, by hand
    assert infomixup_module.tau_spread(torch.tensor([0.5]))["tau_std"] == 0.0


def test_fixed_tau_rows_record_no_spread():
    assert "tau_std" not in FixedInfoMixup.metric_names
    assert {"tau_std", "tau_min", "tau_max"} <= set(InfoMixup.metric_names)
