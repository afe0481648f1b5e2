"""VAAL: VAE + discriminator, warm-started; LADA_VaalMix's latent pair scorer (METHODS.md §6, §9.5)."""
import io
import math

import pytest
import torch

from acquisition_toys import LookAhead, check_smoke_run, make_ctx, read_csv
from acquisition_toys import one_thread  # noqa: F401  (the fixture pytestmark uses)
from ladarun.acquisition import VAAL
from ladarun.acquisition.base import AcquisitionContext
from ladarun.acquisition.vaal import VAE, Discriminator, count_parameters
from ladarun.data.base import ActiveDataset
from ladarun.errors import ConfigError
from ladarun.loop import run_active_learning
from ladarun.models import cnn

# A VAAL small enough for CPU tests: 1/16 of the channels, a few steps on small batches.
TINY_VAAL = dict(steps=3, batch_size=8, width=0.0625)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_vaal_parameter_counts():
    assert count_parameters(Discriminator(32)) == 280_065  # METHODS.md §6/§12
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
    return AcquisitionContext(cnn(1, 2), data, torch.arange(30), torch.Generator().manual_seed(1), score_batch_size=50)


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
    assert set(metrics) == set(VAAL.metric_names) and all(math.isfinite(v) for v in metrics.values())
    assert not any(p.requires_grad for p in acq.disc.parameters())  # frozen between prepares


def test_vaal_pair_scorer_mixes_latent_means_and_passes_gradients_to_lambda():
    ctx = _bright_labeled_ctx()
    acq = VAAL(**TINY_VAAL)
    with pytest.raises(RuntimeError, match="prepare"):
        acq.pair_scorer(ctx, torch.arange(30, 34), torch.arange(0, 4), 1, None, None)
    acq.prepare(ctx)
    first, second = torch.arange(30, 40), torch.arange(0, 10)
    scorer = acq.pair_scorer(ctx, first, second, 1, None, None)
    with torch.no_grad():
        alpha_1 = acq.score_inputs(ctx, ctx.data.x_train[first])
        alpha_2 = acq.score_inputs(ctx, ctx.data.x_train[second])
    torch.testing.assert_close(scorer.base(), alpha_1 + alpha_2)  # Eq. 15's first two terms
    rows = torch.tensor([1, 4, 7])
    ends = scorer.mixed(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]), rows)  # (S=2, B=3)
    torch.testing.assert_close(ends[0], alpha_1[rows])
    torch.testing.assert_close(ends[1], alpha_2[rows])
    lam = torch.tensor([[0.3, 0.5, 0.8]], requires_grad=True)
    mixed = scorer.mixed(lam, rows)
    mu = acq.latent_means(ctx, first[rows]) * lam.detach().T + acq.latent_means(ctx, second[rows]) * (1 - lam.detach().T)
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
    torch.testing.assert_close(clone.score_latent(clone.latent_means(ctx, idx)), acq.score_latent(acq.latent_means(ctx, idx)))
    fresh = lambda: AcquisitionContext(ctx.model, ctx.data, ctx.labeled, torch.Generator().manual_seed(2), 50)  # noqa: E731
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
    with pytest.raises(ConfigError, match="acquisition=vaal must select 4 points but has only 3 candidates"):
        VAAL(**TINY_VAAL).select(make_ctx(dropout=0.0), torch.arange(10, 13), 4)


def test_smoke_run_writes_its_csv(compose_cfg, tmp_path):
    overrides = [f"acquisition.{k}={v}" for k, v in TINY_VAAL.items()]
    check_smoke_run(compose_cfg, tmp_path, "vaal", ["vaal_vae_loss", "vaal_disc_loss", "vaal_score"], overrides)


def test_interrupted_vaal_run_resumes_exactly(tmp_path, monkeypatch):
    """The VAE, the discriminator and their Adam states persist through the checkpoint."""
    from test_loop import tiny_protocol, toy_data
    from test_resume import Crash, crash_at_evaluation, outcome

    def run(out_dir, **kw):
        return run_active_learning(
            data=toy_data(), model_factory=cnn, acquisition=VAAL(**TINY_VAAL),
            protocol=tiny_protocol(iterations=4, epochs=1), out_dir=out_dir, seed=5, device=torch.device("cpu"),
            progress=False, **kw,
        )

    def vaal_columns(rows):
        return [tuple(r[c] for c in VAAL.metric_names) for r in rows]

    run(tmp_path / "straight")
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 4)  # iteration 3 trains, then dies before its row and checkpoint
        with pytest.raises(Crash):
            run(tmp_path / "resumed")
    run(tmp_path / "resumed")
    straight, resumed = read_csv(tmp_path / "straight" / "metrics.csv"), read_csv(tmp_path / "resumed" / "metrics.csv")
    assert outcome(resumed) == outcome(straight)
    assert vaal_columns(resumed) == vaal_columns(straight) and vaal_columns(straight)[3][0] != ""
