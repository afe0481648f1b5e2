"""Ent w. AdaMixup: policy region generator and intrusion discriminator, both trained (docs/methods.md §8)."""

import pytest
import torch
import torch.nn.functional as F

import ladarun.augment.adamixup as adamixup_module
from helpers import (
    CPU,
    Crash,
    context,
    crash_at_evaluation,
    read_csv,
    tiny_protocol,
    toy_data,
    toy_run,
    trained_model,
    without_timings,
)
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
from ladarun.loop import Experiment, RunOptions, run_active_learning
from ladarun.models import cnn, resnet18
from ladarun.training import train_epoch

STEPS = 20  # AdaMixup steps in the short run (the region has left its start well before)


def test_network_sizes_match_the_paper():
    assert count_parameters(IntrusionDiscriminator(512, 10)) == 5_152  # the paper's "5K"
    assert count_parameters(PolicyRegionGenerator(1, 28)) == 145_715  # not counted in Table 1
    assert count_parameters(PolicyRegionGenerator(3, 32)) == 228_211
    # small images are padded
    assert PolicyRegionGenerator(1, 8)(torch.randn(2, 1, 8, 8)).shape == (
        2,
        3,
    )


def test_the_discriminator_is_sized_from_the_classifier_embedding():
    data = toy_data()
    for model in (cnn(1, 3, width=4), resnet18(1, 3)):
        aug = AdaMixup()
        aug.begin_iteration(context(model, data), torch.arange(6, 16))
        assert aug.discriminator.embed_dim == model.embed_dim
        # Linear(d, C), Linear(C, 2)
        assert aug.aux_parameters() == (model.embed_dim + 1) * 3 + (3 + 1) * 2
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
        assert bool(
            ((lam >= region[:, 0] - 1e-6) & (lam <= region[:, 0] + region[:, 1] + 1e-6)).all()
        )
        assert bool(((lam >= 0) & (lam <= 1)).all())
    for u in (torch.zeros(256), torch.ones(256)):  # the interval's ends
        lam = mixing_lambda(region, u)
        assert bool(((lam >= 0) & (lam <= 1 + 1e-6)).all())


def test_losses_weight_each_sample_by_its_own_lambda():
    data = toy_data()
    torch.manual_seed(0)
    model = cnn(
        1, 3, width=4
    ).eval()  # eval: per-sample outputs, so the hand computation can split the batch
    disc = IntrusionDiscriminator(model.embed_dim, 3)
    lam = torch.tensor([0.1, 0.5, 0.8])
    x1, x2, xu = data.x_train[[0, 1, 2]], data.x_train[[4, 5, 3]], data.x_train[[6, 7]]
    y1, y2 = data.y_train[[0, 1, 2]], data.y_train[[4, 5, 3]]
    assert (y1 != y2).all()
    cls_sum, intrusion = adamixup_losses(model, disc, x1, y1, x2, y2, xu, lam, 3)
    logits_mix, logits_1 = model(mix(x1, x2, lam)), model(x1)
    ce_mix_1 = F.cross_entropy(logits_mix, y1, reduction="none")
    ce_mix_2 = F.cross_entropy(logits_mix, y2, reduction="none")
    expected = (lam * ce_mix_1 + (1 - lam) * ce_mix_2).sum() + F.cross_entropy(
        logits_1, y1, reduction="sum"
    )
    torch.testing.assert_close(cls_sum, expected)
    # The official code's batch-mean weighting gives another number: the test can tell them apart.
    official = (lam * ce_mix_1.mean() + (1 - lam) * ce_mix_2.mean()).sum() + F.cross_entropy(
        logits_1, y1, reduction="sum"
    )
    assert abs(float((official - expected).detach())) > 1e-4
    embeddings = model.embed(torch.cat([mix(x1, x2, lam), x1, xu]))
    is_original = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    torch.testing.assert_close(intrusion, F.cross_entropy(disc(embeddings), is_original))


def test_selection_is_the_acquisition_alone():
    data = toy_data()
    model = trained_model(data, epochs=3)
    candidates = torch.arange(6, 66)
    plain = MaxEntropy().select(context(model, data), candidates, 10)
    assert sorted(
        AdaMixup().choose_query(MaxEntropy(), context(model, data), candidates, 10).tolist()
    ) == sorted(plain.tolist())
    with pytest.raises(ConfigError, match="query must be >= 2"):
        AdaMixup().choose_query(MaxEntropy(), context(model, data), candidates, 1)


def test_policy_and_discriminator_are_trained_and_persist_across_iterations():
    data = toy_data()
    torch.manual_seed(0)
    model = cnn(1, 3, width=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    aug = AdaMixup()
    assert aug.extra_step(model, opt) is None  # the initial training: nothing acquired yet
    aug.begin_iteration(context(model, data), torch.arange(6, 16))
    policy, disc = aug.policy, aug.discriminator
    snapshot = lambda *nets: [p.detach().clone() for n in nets for p in n.parameters()]
    policy_0, disc_0, model_0 = snapshot(policy), snapshot(disc), snapshot(model)
    for _ in range(3):
        loss_sum, n = aug.extra_step(model, opt)
        assert n == 10 and torch.isfinite(loss_sum)  # 5 mixes + 5 originals
    changed = lambda before, *nets: [not torch.equal(a, b) for a, b in zip(before, snapshot(*nets))]
    # every policy tensor moved: gradients reach pi through lambda
    assert all(changed(policy_0, policy))
    assert all(changed(disc_0, disc))
    assert any(changed(model_0, model))
    m = aug.metrics()
    assert list(m) == list(AdaMixup.metric_names)
    assert 0 <= m["lambda_mean"] <= 1 and 0 < m["lambda_std"] < 0.5
    assert 0 <= m["region_a"] <= 1 and 0 <= m["region_delta"] <= 1 - m["region_a"]
    assert m["class_loss"] > 0 and m["intrusion_loss"] > 0
    aug.begin_iteration(context(model, data), torch.arange(16, 26))  # the next iteration
    assert aug.policy is policy and aug.discriminator is disc  # created once, not re-created
    # the same optimizer state
    assert all(int(opt.state[p]["step"]) == 6 for p in policy.parameters())


def test_one_optimizer_takes_a_step_on_l_cls_then_a_step_on_l_intr():
    """docs/methods.md §8: Adam step on L_cls, zero the gradients, Adam step on L_intr; one Adam for
    classifier, pi and phi. A joint step on L_cls + L_intr (or pi and phi on an optimizer of
    their own) fails here."""
    data = toy_data()
    torch.manual_seed(0)
    model = cnn(1, 3, width=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    aug = AdaMixup(lr=5e-4)
    aug.begin_iteration(context(model, data), torch.arange(6, 16))
    groups = {
        "fc": list(model.fc.parameters()),
        "trunk": list(model.stages.parameters()),
        "pi": list(aug.policy.parameters()),
        "phi": list(aug.discriminator.parameters()),
    }
    calls, real_step = [], opt.step

    def spy(*args, **kwargs):  # which networks carry a gradient at each optimizer step
        calls.append(
            {name for name, params in groups.items() if any(p.grad is not None for p in params)}
        )
        return real_step(*args, **kwargs)

    opt.step = spy
    k = 3
    for _ in range(k):
        aug.extra_step(model, opt)
    # L_cls reaches the classifier and, through lambda, pi; L_intr reaches the trunk (the
    # embedding), phi and, through lambda in the mixes, pi; never the classifier's fc.
    assert calls == [{"fc", "trunk", "pi"}, {"trunk", "pi", "phi"}] * k
    # zeroed after the steps
    assert all(p.grad is None for params in groups.values() for p in params)
    # One optimizer: pi and phi are a param group of the classifier's Adam, at augment.lr.
    assert aug.optimizer is opt and len(opt.param_groups) == 2
    assert {id(p) for p in opt.param_groups[1]["params"]} == {
        id(p) for p in groups["pi"] + groups["phi"]
    }
    assert opt.param_groups[1]["lr"] == 5e-4 and opt.param_groups[0]["lr"] == 1e-3
    steps = lambda name: {int(opt.state[p]["step"]) for p in groups[name]}
    assert (
        steps("fc") == {k}
        and steps("phi") == {k}
        and steps("pi") == {2 * k}
        and steps("trunk") == {2 * k}
    )
    # The labeled pass steps the same optimizer; pi and phi get no gradient there and stay put.
    before = [p.detach().clone() for p in groups["pi"] + groups["phi"]]
    train_epoch(model, opt, data.x_train, data.y_train, torch.arange(6), 3)
    assert all(torch.equal(a, b) for a, b in zip(before, groups["pi"] + groups["phi"]))
    assert steps("pi") == {2 * k} and steps("fc") == {k + 2}


def test_each_step_uses_its_own_loss_gradient_at_the_same_forward():
    """Step 1's gradient is d L_cls, step 2's is d L_intr (not d (L_cls + L_intr)), both on the
    classifier, pi and phi as they were before step 1, through lambda into pi."""
    data = toy_data()
    torch.manual_seed(0)
    model = cnn(1, 3, width=4)
    with pytest.raises(ConfigError, match="Adam"):
        aug = AdaMixup()
        aug.begin_iteration(context(model, data), torch.arange(6, 16))
        aug.extra_step(model, torch.optim.SGD(model.parameters(), lr=0.1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    aug = AdaMixup()
    aug.begin_iteration(context(model, data), torch.arange(6, 16))
    nets = {"fc": model.fc, "trunk": model.stages, "pi": aug.policy, "phi": aug.discriminator}
    params = [p for net in nets.values() for p in net.parameters()]
    seen, real_step = [], opt.step

    def spy(*args, **kwargs):
        seen.append([None if p.grad is None else p.grad.clone() for p in params])
        return real_step(*args, **kwargs)

    opt.step = spy
    lams, inputs, expected = [], {}, {}
    real_lambda, real_cls, real_intr = (
        adamixup_module.mixing_lambda,
        adamixup_module.classification_loss,
        adamixup_module.intrusion_loss,
    )

    def record_lambda(region, u):
        lams.append(real_lambda(region, u))
        return lams[-1]

    def record_cls(model, x1, y1, x2, y2, lam, num_classes):
        inputs.update(x1=x1, y1=y1, x2=x2, y2=y2)
        return real_cls(model, x1, y1, x2, y2, lam, num_classes)

    def record_intr(model, disc, x1, x2, xu, lam):
        # Called before either step: each loss's gradient by plain autograd, lambda uncut.
        lam_graph = lams[-1]
        cls = (
            real_cls(model, inputs["x1"], inputs["y1"], inputs["x2"], inputs["y2"], lam_graph, 3)
            / 10
        )
        intr = real_intr(model, disc, x1, x2, xu, lam_graph)
        expected["cls"] = torch.autograd.grad(cls, params, retain_graph=True, allow_unused=True)
        expected["intr"] = torch.autograd.grad(intr, params, retain_graph=True, allow_unused=True)
        return real_intr(model, disc, x1, x2, xu, lam)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(adamixup_module, "mixing_lambda", record_lambda)
        m.setattr(adamixup_module, "classification_loss", record_cls)
        m.setattr(adamixup_module, "intrusion_loss", record_intr)
        aug.extra_step(model, opt)
    assert len(seen) == 2
    for step, loss in ((0, "cls"), (1, "intr")):
        for got, want in zip(seen[step], expected[loss]):
            assert (got is None) == (want is None)
            if want is not None:
                torch.testing.assert_close(got, want)
    n_pi = len(list(aug.policy.parameters()))
    pi_at = slice(len(list(model.fc.parameters())) + len(list(model.stages.parameters())), None)
    d_cls, d_intr = expected["cls"][pi_at][:n_pi], expected["intr"][pi_at][:n_pi]
    assert all(g is not None for g in d_cls + d_intr)
    assert any(not torch.allclose(a, b) for a, b in zip(d_cls, d_intr))


def test_region_moves_and_lambda_is_not_uniform_in_a_short_run():
    """pi's region really shapes lambda: over a short run it leaves its start (1/3, 1/3, 1/3) and the
    lambdas drawn follow neither U(0, 1) (lambda ignoring pi) nor U(1/3, 2/3) (pi never trained)."""
    from scipy.stats import kstest

    data = toy_data()
    torch.manual_seed(0)
    # The 4-stage CNN: on this 8x8 toy its gradients move pi's region within 20 steps at every
    # seed tried; the 5-stage one's reach it more weakly (the region moved at 1 seed of 4).
    model = trained_model(data, epochs=3, stages=4, pool_grid=1).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    aug = AdaMixup()
    aug.begin_iteration(context(model, data), torch.arange(6, 26))
    drawn, regions, real = [], [], adamixup_module.mixing_lambda

    def record(region, u):
        lam = real(region, u)
        drawn.extend(lam.detach().tolist())
        regions.append(region.detach().mean(0))
        return lam

    adamixup_module.mixing_lambda = record
    try:
        for _ in range(STEPS):
            aug.extra_step(model, opt)
    finally:
        adamixup_module.mixing_lambda = real
    start, end = regions[0], regions[-1]
    assert torch.allclose(start, torch.full((3,), 1 / 3), atol=0.01)
    assert float((end - start).abs().max()) > 0.1
    assert kstest(drawn, "uniform").pvalue < 1e-3
    assert kstest(drawn, "uniform", args=(1 / 3, 1 / 3)).pvalue < 1e-3


class _DivergesAtIteration2(AdaMixup):
    def begin_iteration(self, ctx, acquired):
        super().begin_iteration(ctx, acquired)
        if self.policy is not None and int(ctx.labeled.numel()) > 6:  # the second acquisition
            with torch.no_grad():
                self.policy.fc2.bias.fill_(float("nan"))


def test_a_non_finite_region_stops_the_run_with_one_clear_error(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^AdaMixup's policy region .* non-finite.*smaller augment\.lr"
    ) as err:
        toy_run(tmp_path, None, _DivergesAtIteration2(), query=4, pool_subset=20)
    assert "\n" not in str(err.value)
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == [0, 1]  # the finished iterations are kept
    assert float(rows[1]["region_a"]) >= 0
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["iteration"] == 1


@pytest.mark.parametrize("reinit", [False, True])
def test_interrupted_run_resumes_exactly_with_the_shared_optimizer(tmp_path, monkeypatch, reinit):
    """pi's and phi's Adam state lives in AdaMixup's checkpoint entry; the classifier optimizer's
    state_dict leaves their group out, so it loads into the loop's fresh optimizer. With
    protocol.reinit the loop makes a new optimizer every iteration and pi and phi move to it."""

    def go(out_dir):
        return run_active_learning(
            Experiment(
                data=toy_data(),
                model_factory=cnn,
                acquisition=MaxEntropy(),
                protocol=tiny_protocol(query=4, pool_subset=20, epochs=2, reinit=reinit),
                seed=3,
                augment=AdaMixup(),
            ),
            out_dir,
            CPU,
            RunOptions(progress=False),
        )

    go(tmp_path / "straight")
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3)  # iteration 2 trains, then dies before its row and checkpoint
        with pytest.raises(Crash):
            go(tmp_path / "resumed")
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert len(ckpt["optimizer"]["param_groups"]) == 1  # the classifier's group alone
    assert (
        len(ckpt["augment"]["adam_state"])
        == len(list(PolicyRegionGenerator(1, 8).parameters())) + 4
    )
    # pi: 2 steps x 2 epochs
    assert all(int(s["step"]) == 4 for s in ckpt["augment"]["adam_state"][:-4])
    go(tmp_path / "resumed")
    resumed, straight = (
        read_csv(tmp_path / "resumed" / "metrics.csv"),
        read_csv(tmp_path / "straight" / "metrics.csv"),
    )
    assert without_timings(resumed) == without_timings(straight)


def test_state_round_trip_and_shape_mismatch():
    data = toy_data()
    model = cnn(1, 3, width=4)
    aug = AdaMixup()
    aug.begin_iteration(context(model, data), torch.arange(6, 16))
    opt = torch.optim.Adam(model.parameters())
    aug.extra_step(model, opt)
    assert len(opt.state_dict()["param_groups"]) == 1  # pi and phi are saved by AdaMixup, not here
    state = aug.state_dict()
    restored = AdaMixup()
    restored.load_state_dict(state)
    for a, b in zip(aug.policy.state_dict().values(), restored.policy.state_dict().values()):
        assert torch.equal(a, b)
    fresh = torch.optim.Adam(model.parameters())
    fresh.load_state_dict(opt.state_dict())
    restored.begin_iteration(context(model, data), torch.arange(6, 16))
    restored._join(fresh)  # pi and phi join the new optimizer with their Adam state
    for p, q in zip(aug._aux_params(), restored._aux_params()):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[p][key], fresh.state[q][key])
    with pytest.raises(ConfigError, match="older AdaMixup"):
        AdaMixup().load_state_dict({k: v for k, v in state.items() if k != "adam_state"})
    colour = ActiveDataset(
        "colour",
        torch.randn(40, 3, 8, 8),
        torch.arange(40) % 3,
        torch.randn(6, 3, 8, 8),
        torch.arange(6) % 3,
        3,
    )
    with pytest.raises(
        ConfigError, match=r"built for 1x8x8 images .* 3x8x8 images.*fresh run directory"
    ):
        restored.begin_iteration(context(cnn(3, 3, width=4), colour), torch.arange(6, 16))
