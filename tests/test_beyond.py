"""The acquisitions beyond the paper on toy cases with known answers (docs/methods.md §3, §16-§18):
Margin's ranking, TypiClust's one typical point per cluster, ProbCover's greedy coverage of
separated balls and its purity rule, ALFA-Mix's flags of predictions that flip."""

import math

import pytest
import torch

from helpers import make_ctx
from ladarun.acquisition import ALFAMix, Margin, MaxEntropy, ProbCover, TypiClust, VarRatio
from ladarun.acquisition.alfamix import class_anchors, inconsistent
from ladarun.acquisition.probcover import probcover_picks, purity_delta
from ladarun.acquisition.typiclust import cluster_labels, typicality, typiclust_picks
from ladarun.embedding import SimCLR, features_digest
from ladarun.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = SimCLR(epochs=1, batch_size=8, width=4)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- Margin ------------------------------------------------------------------------------------


def test_margin_ranks_hand_built_probabilities_unlike_entropy_and_var_ratio():
    probs = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0],  # certain: margin 1
            [0.5, 0.45, 0.05, 0.0],  # two classes neck and neck: margin 0.05
            [0.4, 0.2, 0.2, 0.2],  # spread out, but a clear winner: margin 0.2
            [0.7, 0.3, 0.0, 0.0],  # margin 0.4
        ]
    )
    margin = Margin().score_probs(probs)
    torch.testing.assert_close(margin, torch.tensor([0.0, 0.95, 0.8, 0.6]))
    assert torch.argsort(margin, descending=True).tolist() == [1, 2, 3, 0]
    # Var ratio (0.6 > 0.5) and entropy both put the spread-out row first: margin does not.
    assert torch.argsort(VarRatio().score_probs(probs), descending=True).tolist()[0] == 2
    assert torch.argsort(MaxEntropy().score_probs(probs), descending=True).tolist()[0] == 2


def test_margin_has_a_subgradient_through_both_top_probabilities():
    p = torch.tensor([[0.5, 0.3, 0.2]], requires_grad=True)
    Margin().score_probs(p).sum().backward()
    torch.testing.assert_close(p.grad, torch.tensor([[-1.0, 1.0, 0.0]]))


def test_least_confidence_is_var_ratios_score(compose_cfg):
    from ladarun.config import build

    assert type(build(compose_cfg(["acquisition=least_confidence"]).acquisition)) is VarRatio


# --- TypiClust ---------------------------------------------------------------------------------

CENTRES = torch.tensor([[10.0, 10.0], [-10.0, 10.0], [10.0, -10.0], [-10.0, -10.0]])


def blobs(core=40, halo=20):
    """Four far-apart blobs, each a tight core (std 0.05) inside a wide halo (std 2)."""
    g = gen(3)
    parts = [
        torch.cat(
            [
                c + 0.05 * torch.randn(core, 2, generator=g),
                c + 2 * torch.randn(halo, 2, generator=g),
            ]
        )
        for c in CENTRES
    ]
    return torch.cat(parts), torch.arange(4).repeat_interleave(core + halo)


def test_typicality_is_the_inverse_mean_distance_to_the_nearest_neighbours():
    members = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0]])
    # K = min(20, 4 // 2) = 2 nearest others: 0 -> 1, 3; 1 -> 1, 2; 3 -> 2, 3; 7 -> 4, 6
    t = typicality(members, members, neighbours=20)
    torch.testing.assert_close(t, 1 / (torch.tensor([2.0, 1.5, 2.5, 5.0]) + 1e-5))
    assert typicality(members[:1], members[:1], 20).tolist() == [1.0]  # K = 0


def test_typiclust_picks_the_most_typical_point_of_every_blob():
    x, blob = blobs()
    clusters = cluster_labels(x, 4, seed=0)
    # k-means finds the four blobs
    assert len({(int(b), int(c)) for b, c in zip(blob, clusters)}) == 4
    picks, scores, uncovered = typiclust_picks(
        x, clusters, torch.tensor([], dtype=torch.long), torch.arange(len(x)), 4, gen()
    )
    assert sorted(blob[picks].tolist()) == [0, 1, 2, 3] and uncovered == 4
    # the most typical point of a blob is in its tight core, next to the centre
    assert ((x[picks] - CENTRES[blob[picks]]).norm(dim=1) < 0.2).all()
    for p in picks.tolist():  # and it is the argmax of the typicality over its blob
        members = torch.nonzero(clusters == clusters[p]).flatten()
        assert p == int(members[typicality(x[members], x[members], 20).argmax()])


def test_typiclust_fills_uncovered_clusters_first_and_only_picks_candidates():
    x, blob = blobs()
    clusters = cluster_labels(x, 4, seed=0)
    labeled = torch.tensor([0, 1])  # two labels in blob 0
    picks, _, uncovered = typiclust_picks(x, clusters, labeled, torch.arange(2, len(x)), 3, gen())
    assert sorted(blob[picks].tolist()) == [1, 2, 3] and uncovered == 3
    # blob 1 offers only its halo as candidates: the pick there is the most typical of those
    candidates = torch.cat([torch.nonzero(blob != 1).flatten(), torch.arange(100, 120)])
    picks, _, _ = typiclust_picks(x, clusters, labeled, candidates[candidates > 1], 3, gen())
    assert set(picks.tolist()) <= set(candidates.tolist()) and 1 in blob[picks].tolist()


def test_typiclust_select_clusters_labeled_plus_budget_points(tmp_path):
    ctx = make_ctx(n=60, classes=3, labeled=6)
    acq = TypiClust(TINY, min_cluster_size=0)
    acq.use_cache(tmp_path)
    chosen = acq.select(ctx, torch.arange(30, 60), 4)
    assert chosen.numel() == 4 and set(chosen.tolist()) <= set(range(30, 60))
    assert acq.extra_metrics()["typiclust_clusters"] == 10  # |L| + B = 6 + 4
    again = TypiClust(TINY, min_cluster_size=0)
    again.use_cache(tmp_path)
    ctx.generator.manual_seed(0)
    assert again.select(ctx, torch.arange(30, 60), 4).tolist() == chosen.tolist()


# --- ProbCover ---------------------------------------------------------------------------------


def separated_balls():
    """Three groups of 5, 3 and 2 points, each within 0.1 of its centre, the centres 10 apart."""
    g = gen(1)
    sizes, centres = (5, 3, 2), torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.05 * torch.rand(s, 2, generator=g) for s, c in zip(sizes, centres)])
    return x, torch.tensor([0] * 5 + [1] * 3 + [2] * 2)


def test_probcover_covers_separated_balls_greedily_largest_first():
    x, group = separated_balls()
    none = torch.tensor([], dtype=torch.long)
    picks, gains, coverage, largest = probcover_picks(x, 1.0, none, torch.arange(10), 3, gen())
    assert group[picks].tolist() == [0, 1, 2] and gains.tolist() == [5, 3, 2]
    assert coverage == 1.0 and largest == 5
    # a labeled point covers its ball: the greedy starts with the next largest
    picks, gains, _, _ = probcover_picks(x, 1.0, torch.tensor([0]), torch.arange(1, 10), 2, gen())
    assert group[picks].tolist() == [1, 2] and gains.tolist() == [3, 2]
    # once everything is covered every gain is 0: the rest is a seeded random draw
    picks, gains, _, _ = probcover_picks(x, 1.0, none, torch.arange(10), 5, gen(4))
    assert gains.tolist() == [5, 3, 2, 0, 0] and len(set(picks.tolist())) == 5
    again, _, _, _ = probcover_picks(x, 1.0, none, torch.arange(10), 5, gen(4))
    assert again.tolist() == picks.tolist()


def test_purity_rule_gives_the_largest_delta_with_enough_pure_balls():
    # two k-means clusters {0, 1, 2} and {10, 11}: the distance to the other cluster is
    # r = 10, 9, 8, 8, 9; 3 of 5 balls are pure up to delta 9, so purity 0.6 gives 9
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    assert purity_delta(x, 2, 0.6, seed=0) == pytest.approx(9.0)
    assert purity_delta(x, 2, 1.0, seed=0) == pytest.approx(8.0)


def _with_features(acq, ctx, features):
    acq._features, acq._digest = features, features_digest(features)
    return acq


def test_probcover_refuses_a_delta_that_covers_nothing_and_a_bad_setting():
    ctx = make_ctx(n=60)
    features = torch.nn.functional.normalize(torch.randn(60, 8, generator=gen()), dim=1)
    acq = _with_features(ProbCover(TINY, delta=1e-6), ctx, features)
    with pytest.raises(ConfigError, match=r"covers nothing.*raise acquisition.delta"):
        acq.select(ctx, torch.arange(30, 60), 4)
    with pytest.raises(ConfigError, match="acquisition.delta must be positive"):
        ProbCover(TINY, delta=0.0)
    chosen = _with_features(ProbCover(TINY, delta=1.0), ctx, features).select(
        ctx, torch.arange(30, 60), 4
    )
    assert chosen.numel() == 4 and set(chosen.tolist()) <= set(range(30, 60))


def test_probcover_keeps_the_purity_rules_delta_beside_the_embedding(tmp_path, monkeypatch):
    import ladarun.acquisition.probcover as probcover

    ctx = make_ctx(n=60)
    calls = []
    real = probcover.purity_delta
    monkeypatch.setattr(probcover, "purity_delta", lambda *a: calls.append(1) or real(*a))
    for _ in range(2):  # two runs of the dataset: the rule runs once
        acq = ProbCover(TINY, purity=0.5)
        acq.use_cache(tmp_path)
        acq.select(ctx, torch.arange(30, 60), 4)
    assert len(calls) == 1
    assert acq.extra_metrics()["probcover_delta"] > 0


# --- ALFA-Mix ----------------------------------------------------------------------------------

# A 2-class linear head on 2-d features: class 0 when z_1 > 0. Anchors at (+2, 0) and (-2, 0).
W, B = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.zeros(2)
ANCHORS = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])


def test_alfamix_flags_exactly_the_points_whose_label_flips_under_interpolation():
    # With cap 0.2 (eps = 0.2 / sqrt 2), z = (x, 0) moves to x - (x + 2) eps towards the other
    # anchor, which flips the prediction iff x < 2 eps / (1 - eps) = 0.329.
    z = torch.tensor([[0.05, 0.3], [0.3, -0.2], [0.4, 0.0], [3.0, 1.0], [-0.1, 0.0], [-1.0, 0.0]])
    flagged, cap = inconsistent(z, ANCHORS, W, B, alpha_cap=0.2, budget=0)
    assert flagged.tolist() == [True, True, False, False, True, False] and cap == 0.2
    eps = 0.2 / math.sqrt(2)
    assert 2 * eps / (1 - eps) == pytest.approx(0.329, abs=1e-3)
    # a larger budget raises the cap until more than `budget` points flip (or the cap reaches 1)
    flagged, cap = inconsistent(z, ANCHORS, W, B, alpha_cap=0.2, budget=3)
    # at cap 0.4 the point at 0.4 flips too (x < 0.79), and 4 > 3 ends the search
    assert cap == pytest.approx(0.4) and flagged.tolist() == [True, True, True, False, True, False]
    # a class without labeled points gets the mean of all labeled features
    torch.testing.assert_close(
        class_anchors(z[:2], torch.tensor([0, 0]), 2), torch.tensor([[0.175, 0.05]] * 2)
    )


def test_alfamix_select_picks_the_central_flip_of_each_group():
    from torch import nn

    from ladarun.acquisition.base import AcquisitionContext
    from ladarun.data.base import ActiveDataset
    from ladarun.models.staged import StagedClassifier

    # The classifier's penultimate features are the 2-d inputs themselves (identity stage).
    model = StagedClassifier([nn.Identity()], embed_dim=2, num_classes=2)
    with torch.no_grad():
        model.fc.weight.copy_(W), model.fc.bias.zero_()
    z = torch.tensor(
        [[2.0, 0.0], [-2.0, 0.0]]  # the labeled points: the anchors
        + [[0.05, 5.0], [0.06, 5.1], [0.04, 4.9]]  # near the boundary, up: flips
        + [[0.05, -5.0], [0.06, -5.1], [0.04, -4.9]]  # near the boundary, down: flips
        + [[3.0, 5.0], [3.0, -5.0], [-3.0, 5.0]]  # confident: no flip at a small cap
    )
    y = torch.tensor([0, 1] + [0] * 9)
    data = ActiveDataset("toy", z[:, :, None, None], y, z[:1, :, None, None], y[:1], 2)
    ctx = AcquisitionContext(model.eval(), data, torch.tensor([0, 1]), gen(), 4)
    acq = ALFAMix()
    chosen = acq.select(ctx, torch.arange(2, 11), 2)
    assert sorted(chosen.tolist()) == [2, 5]  # the centre of each group
    assert acq.extra_metrics() == {
        "alfamix_inconsistent": 6,
        "alfamix_cap": 0.2,
        "alfamix_random": 0,
    }


def test_alfamix_on_a_cnn_returns_distinct_candidates_and_counts_its_random_fills():
    ctx = make_ctx(n=60, classes=3, labeled=6)
    candidates = torch.arange(20, 60)
    acq = ALFAMix()
    chosen = acq.select(ctx, candidates, 5)
    m = acq.extra_metrics()
    assert chosen.numel() == 5 == len(set(chosen.tolist())) and set(chosen.tolist()) <= set(
        range(20, 60)
    )
    assert m["alfamix_random"] == max(0, 5 - m["alfamix_inconsistent"])
    assert 0 < m["alfamix_cap"] <= 1


def test_new_acquisitions_refuse_a_budget_larger_than_the_candidates(tmp_path):
    ctx = make_ctx(n=60)
    for acq in (TypiClust(TINY), ProbCover(TINY), ALFAMix()):
        acq.use_cache(tmp_path)
        with pytest.raises(ConfigError, match=r"must select 4 points but has only 3 candidates"):
            acq.select(ctx, torch.arange(10, 13), 4)


def test_only_margin_can_drive_a_look_ahead():
    from helpers import LookAhead

    LookAhead().check_compatible(Margin(), "margin")
    for name, acq in (
        ("typiclust", TypiClust(TINY)),
        ("probcover", ProbCover(TINY)),
        ("alfamix", ALFAMix()),
    ):
        with pytest.raises(ConfigError, match=f"acquisition={name} selects a batch"):
            LookAhead().check_compatible(acq, name)


def test_whole_pool_chooses_from_every_unlabeled_point_as_the_papers():
    ctx = make_ctx(n=60, labeled=6)
    features = torch.nn.functional.normalize(torch.randn(60, 8, generator=gen(2)), dim=1)
    acq = _with_features(ProbCover(TINY, delta=0.8, whole_pool=True), ctx, features)
    chosen = acq.select(ctx, torch.arange(30, 34), 4)
    ctx.generator.manual_seed(0)
    expected, _, _, _ = probcover_picks(features, 0.8, ctx.labeled, ctx.pool, 4, ctx.generator)
    assert chosen.tolist() == expected.tolist() and (chosen >= 6).all()
    typi = _with_features(TypiClust(TINY, min_cluster_size=0, whole_pool=True), ctx, features)
    assert (typi.select(ctx, torch.arange(30, 34), 4) >= 6).all()
