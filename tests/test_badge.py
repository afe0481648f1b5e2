"""BADGE: k-means++ seeding on gradient embeddings, factorised distances (docs/methods.md §5)."""

import pytest
import torch
import torch.nn.functional as F

from helpers import LookAhead, check_smoke_run, make_ctx
from ladarun.acquisition import BADGE
from ladarun.acquisition.badge import (
    FactorisedDistances,
    gradient_embeddings,
    gradient_factors,
    kmeans_pp_seeding,
)
from ladarun.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_badge_gradient_embedding_is_the_negative_last_layer_gradient():
    torch.manual_seed(0)
    fc = torch.nn.Linear(5, 4)
    h = torch.randn(3, 5)
    logits = fc(h)
    a, hh = gradient_factors(logits.detach(), h)
    g = gradient_embeddings(a, hh)
    for i in range(3):
        fc.zero_grad()
        F.cross_entropy(fc(h[i : i + 1]), logits[i : i + 1].argmax(1)).backward()
        torch.testing.assert_close(g[i], -fc.weight.grad.flatten())


def test_badge_factorised_distances_equal_the_explicit_ones():
    g = torch.Generator().manual_seed(3)
    logits, h = torch.randn(9, 4, generator=g) * 2, torch.randn(9, 6, generator=g)
    a, h = gradient_factors(logits, h)
    explicit = torch.cdist(gradient_embeddings(a, h), gradient_embeddings(a, h)) ** 2
    dist = FactorisedDistances(a, h)
    torch.testing.assert_close(dist.pairwise(), explicit, atol=1e-4, rtol=1e-4)
    for j in range(9):
        torch.testing.assert_close(dist.to(torch.tensor([j])), explicit[:, j], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dist.sq_norms, gradient_embeddings(a, h).pow(2).sum(1))


def test_badge_seeding_starts_at_the_largest_gradient_and_never_repeats():
    g = torch.Generator().manual_seed(4)
    logits, h = torch.randn(12, 3, generator=g), torch.randn(12, 5, generator=g)
    a, h = gradient_factors(logits, h)
    dist = FactorisedDistances(a, h)
    seeds = kmeans_pp_seeding(dist, 12, torch.Generator().manual_seed(0))  # all of them
    assert seeds[0] == dist.sq_norms.argmax() and sorted(seeds.tolist()) == list(range(12))
    # Duplicates: every remaining D is 0 after the first seed; still 6 distinct points.
    dup = FactorisedDistances(a[:1].repeat(6, 1), h[:1].repeat(6, 1))
    assert sorted(kmeans_pp_seeding(dup, 6, torch.Generator().manual_seed(1)).tolist()) == list(
        range(6)
    )
    # D^2 sampling: after the largest-norm point 0, point 5 holds nearly all the D^2 mass.
    far_a = torch.tensor([[1.0, 0.0]] * 6)
    far_h = torch.tensor([[10.0, 0.0]] + [[9.99, 0.01 * i] for i in range(1, 5)] + [[0.0, 8.0]])
    picks = [
        kmeans_pp_seeding(
            FactorisedDistances(far_a, far_h), 2, torch.Generator().manual_seed(s)
        ).tolist()
        for s in range(10)
    ]
    assert picks == [[0, 5]] * 10


def test_badge_selects_distinct_candidates_reproducibly():
    ctx = make_ctx(n=80)
    candidates = torch.arange(20, 80)
    first = BADGE().select(ctx, candidates, 8)
    again = BADGE().select(make_ctx(n=80), candidates, 8)
    other = BADGE().select(make_ctx(n=80, seed=9), candidates, 8)
    assert first.unique().numel() == 8 and set(first.tolist()) <= set(candidates.tolist())
    assert first.tolist() == again.tolist() and first.tolist() != other.tolist()
    acq = BADGE()
    acq.select(ctx, candidates, 8)
    metrics = acq.extra_metrics()
    assert metrics["badge_grad_norm"] > 0 and 1 <= metrics["badge_classes"] <= 3


def test_badge_refuses_look_ahead_augmentations():
    with pytest.raises(
        ConfigError, match="acquisition=badge selects a batch and has no per-instance score"
    ):
        LookAhead().check_compatible(BADGE(), "badge")


def test_a_query_larger_than_the_candidates_is_a_clear_error():
    with pytest.raises(
        ConfigError, match="acquisition=badge must select 4 points but has only 3 candidates"
    ):
        BADGE().select(make_ctx(dropout=0.0), torch.arange(10, 13), 4)


def test_smoke_run_writes_its_csv(compose_cfg, tmp_path):
    check_smoke_run(compose_cfg, tmp_path, "badge", ["badge_grad_norm", "badge_classes"])
