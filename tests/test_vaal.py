"""VAAL: VAE + discriminator, warm-started; LADA_VaalMix's latent pair scorer (docs/methods.md §6, §9.5)."""

import copy
import io
import math

import pytest
import torch

from helpers import (
    CPU,
    Crash,
    LookAhead,
    check_smoke_run,
    crash_at_evaluation,
    make_ctx,
    outcome,
    read_csv,
    tiny_protocol,
    toy_data,
)
from ladarun.acquisition import VAAL
from ladarun.acquisition.base import AcquisitionContext
from ladarun.acquisition.passes import eval_mode
from ladarun.acquisition.vaal import VAE, Discriminator, count_parameters
from ladarun.data.base import ActiveDataset
from ladarun.errors import ConfigError
from ladarun.loop import Experiment, RunOptions, run_active_learning
from ladarun.models import cnn

# A VAAL small enough for CPU tests: 1/16 of the channels, a few steps on small batches.
TINY_VAAL = dict(steps=3, batch_size=8, width=0.0625)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_vaal_parameter_counts():
    assert count_parameters(Discriminator(32)) == 280_065  # docs/methods.md §6/§12
    assert count_parameters(VAE(3, 32)) == 22_835_139  # the "about 22.8M" VAE
    assert VAAL().aux_parameters() == 280_065  # Table 1's Param column counts D only
    assert VAAL(latent_dim=64).aux_parameters() == count_parameters(Discriminator(64)) == 296_449
    state = torch.get_rng_state()
    VAAL().aux_parameters()
    assert torch.equal(torch.get_rng_state(), state)  # counting draws no random numbers


def test_vaal_pads_small_images_to_32():
    x = torch.randn(2, 1, 28, 28)
    padded = VAAL.vae_input(x)
    assert padded.shape == (2, 1, 32, 32)
    assert torch.equal(padded[..., 2:30, 2:30], x) and padded[..., :2, :].abs().sum() == 0
    assert VAAL.vae_input(torch.randn(1, 3, 8, 8)).shape == (1, 3, 32, 32)
    with pytest.raises(ConfigError, match="up to 32x32"):
        VAAL.vae_input(torch.randn(1, 3, 64, 64))


def _bright_labeled_ctx():
    """Labeled images are bright on the left, unlabeled ones on the right.

    A spatial pattern, not a global brightness: VAAL's VAE (as the original) runs labeled and
    unlabeled batches separately in training mode, and its BatchNorm would normalise a global
    offset away in each batch, hiding it from the discriminator.
    """
    g = torch.Generator().manual_seed(0)
    x = 0.3 * torch.randn(120, 1, 8, 8, generator=g)
    x[:30, :, :, :4] += 2.0
    x[30:, :, :, 4:] += 2.0
    y = torch.zeros(120, dtype=torch.long)
    data = ActiveDataset("toy", x, y, x[:4], y[:4], 2)
    torch.manual_seed(0)
    return AcquisitionContext(
        cnn(1, 2), data, torch.arange(30), torch.Generator().manual_seed(1), score_batch_size=50
    )


def test_vaal_scores_what_it_was_trained_to_see_as_unlabeled_above_the_labeled():
    ctx = _bright_labeled_ctx()
    # A plain autoencoder (no KL, no adversarial pull), so that mu keeps the left/right pattern
    # and the discriminator alone learns labeled vs unlabeled. (With beta = 1 the KL, summed
    # over the batch against a mean MSE as in the original, collapses mu on this toy.)
    torch.manual_seed(0)
    acq = VAAL(steps=20, batch_size=16, width=0.0625, beta=0.0, adversary_weight=0.0)
    chosen = acq.select(ctx, torch.arange(20, 120), 10)
    scores = acq.score_latent(acq.latent_means(ctx, torch.arange(120)))
    labeled, unlabeled = scores[:30], scores[30:]
    ordered = (unlabeled[:, None] > labeled[None, :]).float().mean()
    assert ordered > 0.95, f"only {ordered:.2f} of (unlabeled, labeled) pairs ranked correctly"
    assert (chosen >= 30).all()  # the query comes from the unlabeled candidates
    metrics = acq.extra_metrics()
    assert set(metrics) == set(VAAL.metric_names) and all(
        math.isfinite(v) for v in metrics.values()
    )
    assert not any(p.requires_grad for p in acq.disc.parameters())  # frozen between prepares


def test_vaal_scores_on_batch_statistics_and_leaves_the_running_ones_untouched():
    """As the original sampler (VAE still in training mode), mu is computed with BatchNorm on
    each scoring batch's statistics, the mode D was trained in; scoring changes no state."""
    ctx = _bright_labeled_ctx()
    acq = VAAL(**TINY_VAAL)
    acq.prepare(ctx)
    before = copy.deepcopy(acq.vae.state_dict())  # running means/variances and num_batches_tracked
    idx = torch.randperm(120, generator=torch.Generator().manual_seed(4))
    mu = acq.latent_means(ctx, idx)
    again = acq.latent_means(ctx, idx)
    assert torch.equal(mu, again)  # deterministic: a second pass sees the same state
    after = acq.vae.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "scoring moved a BatchNorm buffer"
    norms = [m for m in acq.vae.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # modes restored
    assert not acq.vae.training and all(not m.training and m.track_running_stats for m in norms)
    # Batch statistics, batch by batch: 120 candidates in ceil(120 / 8) = 15 batches of 8, in order.
    reference = copy.deepcopy(acq.vae).train()
    with torch.no_grad():
        expected = torch.cat(
            [reference.encode(VAAL.vae_input(ctx.data.x_train[c]))[0] for c in idx.tensor_split(15)]
        )
        with eval_mode(acq.vae):
            running = acq.vae.encode(VAAL.vae_input(ctx.data.x_train[idx]))[0]
    torch.testing.assert_close(mu, expected)
    assert not torch.allclose(mu, running, atol=1e-3)  # not the running (eval-mode) statistics
    # The score of one batch of images (score_inputs, used by look-ahead augmentations): the same
    # batch statistics, and no state change either.
    batch = ctx.data.x_train[idx[:8]]
    torch.testing.assert_close(acq.score_inputs(ctx, batch), acq.score_latent(mu[:8]))
    assert all(torch.equal(before[k], v) for k, v in acq.vae.state_dict().items())


def _two_novel_classes_ctx(seed: int):
    """Four classes, each a bright quadrant; classes 0 and 1 are labeled (20 of 30 each), classes
    2 and 3 exist only in the pool, 10 images each. The pool: 10 + 10 of the labeled classes and
    10 + 10 of the novel ones."""
    g = torch.Generator().manual_seed(seed)
    y = torch.cat(
        [torch.full((30,), 0), torch.full((30,), 1), torch.full((10,), 2), torch.full((10,), 3)]
    )
    x = 0.3 * torch.randn(y.numel(), 1, 8, 8, generator=g)
    for c in range(4):
        r, q = divmod(c, 2)
        x[y == c, :, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 2.0
    data = ActiveDataset("toy", x, y, x[:4], y[:4], 4)
    torch.manual_seed(seed)
    labeled = torch.cat([torch.arange(0, 20), torch.arange(30, 50)])
    return AcquisitionContext(
        cnn(1, 4), data, labeled, torch.Generator().manual_seed(seed), score_batch_size=50
    )


class _EvalModeVAAL(VAAL):
    """The earlier scoring: mu with the VAE in eval mode (running BatchNorm statistics)."""

    @torch.no_grad()
    def latent_means(self, ctx, indices):
        with eval_mode(self.vae):
            return self.vae.encode(self.vae_input(ctx.data.x_train[indices]))[0].float()


def _novel_query(acquisition_class, seed=0):
    ctx = _two_novel_classes_ctx(seed)
    torch.manual_seed(seed)
    acq = acquisition_class(steps=100, batch_size=16, width=0.0625)
    picked = acq.select(ctx, ctx.pool, 12)
    return acq, torch.bincount(ctx.data.y_train[picked], minlength=4)


def _looks_for_the_novel_classes(counts: torch.Tensor) -> bool:
    """At least 9 of the 12 picks from the two classes the labeled set lacks, and both of them
    (neither alone can fill the query). Random picks make 6 of 12 novel on average."""
    return bool(counts[2:].sum() >= 9 and (counts[2:] > 0).all())


def test_vaal_queries_the_classes_missing_from_the_labeled_set_and_more_than_one_of_them():
    """D learns "labeled" = classes 0 and 1, so its query should come from classes 2 and 3.

    The test can fail: with the earlier eval-mode BatchNorm at scoring (mu off the distribution
    D was trained on), the same toy gets a query near the random 50/50 mix of labeled and novel
    classes (measured: at most 7 of 12 novel over seeds 0-5, against 9-12 with batch statistics).
    """
    acq, counts = _novel_query(VAAL)
    assert _looks_for_the_novel_classes(counts), f"query per class {counts.tolist()}"
    metrics = acq.extra_metrics()
    assert metrics["vaal_pick_classes"] == int((counts > 0).sum()) >= 2
    assert metrics["vaal_pick_max_share"] == pytest.approx(float(counts.max()) / 12)
    _, old_counts = _novel_query(_EvalModeVAAL)
    assert not _looks_for_the_novel_classes(old_counts), (
        f"eval-mode query per class {old_counts.tolist()}"
    )


def test_vaal_pair_scorer_mixes_latent_means_and_passes_gradients_to_lambda():
    ctx = _bright_labeled_ctx()
    acq = VAAL(**TINY_VAAL)
    with pytest.raises(RuntimeError, match="prepare"):
        acq.pair_scorer(ctx, torch.arange(30, 34), torch.arange(0, 4), 1, None, None)
    acq.prepare(ctx)
    first, second = torch.arange(30, 40), torch.arange(0, 10)
    scorer = acq.pair_scorer(ctx, first, second, 1, None, None)
    with torch.no_grad():
        # The single-point scores of the candidates as VAAL's own selection computes them: mu on
        # the statistics of training-size batches of each half (here 10 -> two batches of 5).
        # (This compared against score_inputs on all 10 images at once while mu used eval-mode
        # BatchNorm, where the batch did not matter; with batch statistics it does.)
        alpha_1 = acq.score_latent(acq.latent_means(ctx, first))
        alpha_2 = acq.score_latent(acq.latent_means(ctx, second))
        torch.testing.assert_close(acq.score_inputs(ctx, ctx.data.x_train[first[:5]]), alpha_1[:5])
    torch.testing.assert_close(scorer.base(), alpha_1 + alpha_2)  # Eq. 15's first two terms
    rows = torch.tensor([1, 4, 7])
    ends = scorer.mixed(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]), rows)  # (S=2, B=3)
    torch.testing.assert_close(ends[0], alpha_1[rows])
    torch.testing.assert_close(ends[1], alpha_2[rows])
    lam = torch.tensor([[0.3, 0.5, 0.8]], requires_grad=True)
    mixed = scorer.mixed(lam, rows)
    mu = scorer.mu_first[rows] * lam.detach().T + scorer.mu_second[rows] * (1 - lam.detach().T)
    torch.testing.assert_close(scorer.mu_first, acq.latent_means(ctx, first))
    torch.testing.assert_close(mixed[0], acq.score_latent(mu))
    mixed.sum().backward()
    assert torch.isfinite(lam.grad).all() and lam.grad.abs().sum() > 0
    column = scorer.mixed(lam.detach().T, rows)  # a (B, 1) column reads as one lambda per row
    torch.testing.assert_close(column, mixed[0].detach())


def test_vaal_state_dict_restores_networks_and_optimisers():
    ctx = _bright_labeled_ctx()
    acq = VAAL(**TINY_VAAL)
    assert acq.state_dict() == {}
    acq.prepare(ctx)
    clone = VAAL(**TINY_VAAL)
    buffer = io.BytesIO()  # through bytes, as the checkpoint does: no tensor shared between the two
    torch.save(acq.state_dict(), buffer)
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer, weights_only=False))
    idx = torch.arange(120)
    torch.testing.assert_close(
        clone.score_latent(clone.latent_means(ctx, idx)),
        acq.score_latent(acq.latent_means(ctx, idx)),
    )
    fresh = lambda: AcquisitionContext(
        ctx.model, ctx.data, ctx.labeled, torch.Generator().manual_seed(2), 50
    )
    torch.manual_seed(3)
    acq.prepare(fresh())
    torch.manual_seed(3)
    clone.prepare(fresh())
    for a, b in zip(acq.vae.state_dict().values(), clone.vae.state_dict().values()):
        torch.testing.assert_close(a, b)  # same warm start + same Adam state = same next steps
    for a, b in zip(acq.disc.state_dict().values(), clone.disc.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_vaal_without_labeled_or_unlabeled_images_is_a_clear_error():
    ctx = make_ctx(labeled=0)
    with pytest.raises(ConfigError, match="needs labeled and unlabeled"):
        VAAL(**TINY_VAAL).prepare(ctx)


def test_vaal_drives_look_ahead_augmentations():
    LookAhead().check_compatible(VAAL(), "vaal")  # per_instance: no error


def test_a_query_larger_than_the_candidates_is_a_clear_error():
    with pytest.raises(
        ConfigError, match="acquisition=vaal must select 4 points but has only 3 candidates"
    ):
        VAAL(**TINY_VAAL).select(make_ctx(dropout=0.0), torch.arange(10, 13), 4)


def test_smoke_run_writes_its_csv(compose_cfg, tmp_path):
    overrides = [f"acquisition.{k}={v}" for k, v in TINY_VAAL.items()]
    columns = [
        "vaal_vae_loss",
        "vaal_disc_loss",
        "vaal_score",
        "vaal_score_candidates",
        "vaal_pick_classes",
        "vaal_pick_max_share",
    ]
    check_smoke_run(compose_cfg, tmp_path, "vaal", columns, overrides)


def test_interrupted_vaal_run_resumes_exactly(tmp_path, monkeypatch):
    """The VAE, the discriminator and their Adam states persist through the checkpoint."""

    def run(out_dir, **kw):
        return run_active_learning(
            Experiment(
                data=toy_data(),
                model_factory=cnn,
                acquisition=VAAL(**TINY_VAAL),
                protocol=tiny_protocol(iterations=4, epochs=1),
                seed=5,
            ),
            out_dir,
            CPU,
            RunOptions(progress=False, **kw),
        )

    def vaal_columns(rows):
        return [tuple(r[c] for c in VAAL.metric_names) for r in rows]

    run(tmp_path / "straight")
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 4)  # iteration 3 trains, then dies before its row and checkpoint
        with pytest.raises(Crash):
            run(tmp_path / "resumed")
    run(tmp_path / "resumed")
    straight, resumed = (
        read_csv(tmp_path / "straight" / "metrics.csv"),
        read_csv(tmp_path / "resumed" / "metrics.csv"),
    )
    assert outcome(resumed) == outcome(straight)
    assert vaal_columns(resumed) == vaal_columns(straight) and vaal_columns(straight)[3][0] != ""


def test_vae_steps_compute_no_discriminator_weight_gradients():
    """Issue 19, item 4: the VAE's steps differentiate through D to mu only; D's weight gradients
    are computed once per adversarial step, in D's own step (they used to be computed in every VAE
    step too, then discarded by D's zero_grad)."""
    ctx = make_ctx(n=80, size=8)
    vaal = VAAL(steps=4, vae_steps=2, batch_size=8, latent_dim=4, width=1 / 32)
    vaal.prepare(ctx)  # builds the networks
    weights_need_grad = []  # per forward of D: will its weights get a gradient?
    vaal.disc.register_forward_pre_hook(
        lambda module, args: weights_need_grad.append(module.net[0].weight.requires_grad)
    )
    vaal.prepare(ctx)
    per_step = [False] * (2 * vaal.vae_steps) + [True] * 2  # 2 VAE steps, then D's step
    assert weights_need_grad == per_step * vaal.steps
    assert all(not p.requires_grad for p in vaal.disc.parameters())  # frozen for the look-ahead
