"""Coreset: k-center greedy on the penultimate embeddings (docs/methods.md §4)."""

import pytest
import torch

from helpers import LookAhead, check_smoke_run, make_ctx
from ladarun.acquisition import Coreset, k_center_greedy
from ladarun.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_k_center_greedy_takes_the_farthest_points_on_a_hand_built_example():
    centres = torch.tensor([[0.0, 0.0]])
    points = torch.tensor([[1.0, 0.0], [10.0, 0.0], [10.0, 1.0], [0.0, 5.0], [-6.0, 0.0]])
    picks, radius = k_center_greedy(points, centres, 3)
    # (10, 1) is farthest from the origin; then (-6, 0) at 6 beats (0, 5) at 5; then (0, 5).
    assert picks.tolist() == [2, 4, 3]
    torch.testing.assert_close(radius, torch.tensor(1.0))  # (1, 0) and (10, 0) are 1 from a centre
    _, radius_one = k_center_greedy(points, centres, 1)
    torch.testing.assert_close(radius_one, torch.tensor(6.0))
    # No labeled centres: the first point starts, then the farthest from it, (10, 1) at sqrt(82).
    assert k_center_greedy(points, centres[:0], 2)[0].tolist() == [0, 2]


def test_k_center_greedy_chunks_agree_and_never_repeat_a_point():
    g = torch.Generator().manual_seed(0)
    points, centres = torch.randn(300, 16, generator=g), torch.randn(40, 16, generator=g)
    whole, r_whole = k_center_greedy(points, centres, 12)
    # 2 rows per chunk
    chunked, r_chunked = k_center_greedy(points, centres, 12, chunk_elements=100)
    assert whole.tolist() == chunked.tolist()
    torch.testing.assert_close(r_whole, r_chunked)
    explicit = torch.cdist(points, torch.cat([centres, points[whole]])).min(1).values.max()
    torch.testing.assert_close(r_whole, explicit, atol=1e-4, rtol=1e-4)
    same = torch.ones(5, 3)
    assert sorted(k_center_greedy(same, same[:1], 5)[0].tolist()) == [0, 1, 2, 3, 4]


def test_coreset_selects_by_embedding_from_the_subset_or_the_whole_pool():
    ctx = make_ctx()
    candidates = torch.arange(30, 50)
    acq = Coreset()
    chosen = acq.select(ctx, candidates, 4)
    ctx.model.eval()
    with torch.no_grad():
        emb = ctx.model.embed(ctx.data.x_train)
    expected, radius = k_center_greedy(emb[candidates], emb[ctx.labeled], 4)
    assert chosen.tolist() == candidates[expected].tolist()
    assert acq.extra_metrics()["coreset_radius"] == pytest.approx(float(radius), rel=1e-5)
    everywhere = Coreset(whole_pool=True).select(ctx, candidates, 4)
    pool_pick, _ = k_center_greedy(emb[ctx.pool], emb[ctx.labeled], 4)
    assert everywhere.tolist() == ctx.pool[pool_pick].tolist()
    assert (everywhere >= ctx.labeled.numel()).all()


def test_coreset_refuses_look_ahead_augmentations():
    with pytest.raises(
        ConfigError, match="acquisition=coreset selects a batch and has no per-instance score"
    ):
        LookAhead().check_compatible(Coreset(), "coreset")


def test_a_query_larger_than_the_candidates_is_a_clear_error():
    with pytest.raises(
        ConfigError, match="acquisition=coreset must select 4 points but has only 3 candidates"
    ):
        Coreset().select(make_ctx(dropout=0.0), torch.arange(10, 13), 4)


def test_smoke_run_writes_its_csv(compose_cfg, tmp_path):
    check_smoke_run(compose_cfg, tmp_path, "coreset", ["coreset_radius"])
