import math

import torch

from ladarun.acquisition import MaxEntropy, RandomAcquisition, VarRatio, entropy_bits, top_k
from ladarun.acquisition.base import AcquisitionContext
from ladarun.data.base import ActiveDataset
from ladarun.models import cnn

# Hand-built predictive distributions over 4 classes, least to most uncertain by entropy.
PROBS = torch.tensor(
    [
        [1.0, 0.0, 0.0, 0.0],  # certain (has exact zeros)
        [0.9, 0.1, 0.0, 0.0],
        [0.6, 0.4, 0.0, 0.0],  # max 0.6
        [0.7, 0.1, 0.1, 0.1],  # max 0.7, but spread over more classes
        [0.25, 0.25, 0.25, 0.25],  # uniform
    ]
)


def test_entropy_is_base_2_and_finite_with_zero_probabilities():
    h = entropy_bits(PROBS)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h[0], torch.tensor(0.0))
    torch.testing.assert_close(h[4], torch.tensor(2.0))  # log2(4)
    expected = -(0.9 * math.log2(0.9) + 0.1 * math.log2(0.1))
    torch.testing.assert_close(h[1], torch.tensor(expected))


def test_entropy_gradient_is_finite_at_zero_probabilities():
    p = PROBS.clone().requires_grad_(True)
    MaxEntropy().score_probs(p).sum().backward()
    assert torch.isfinite(p.grad).all()


def test_entropy_and_var_ratio_rank_hand_built_probabilities():
    ent = MaxEntropy().score_probs(PROBS)
    var = VarRatio().score_probs(PROBS)
    # Entropy: the spread-out 0.7 row (1.357 bits) beats the two-class 0.6 row (0.971 bits).
    assert torch.argsort(ent, descending=True).tolist() == [4, 3, 2, 1, 0]
    # Var ratio only looks at the max, so 0.6 beats 0.7: the two criteria disagree here.
    assert torch.argsort(var, descending=True).tolist() == [4, 2, 3, 1, 0]
    torch.testing.assert_close(var, torch.tensor([0.0, 0.1, 0.4, 0.3, 0.75]))


def test_entropy_from_logits_equals_entropy_of_softmax():
    logits = torch.randn(50, 10) * 5
    torch.testing.assert_close(
        MaxEntropy().score_logits(logits), entropy_bits(torch.softmax(logits, 1))
    )
    big = torch.tensor([[1000.0, 0.0, -1000.0]])
    assert torch.isfinite(MaxEntropy().score_logits(big)).all()


def test_var_ratio_has_a_subgradient():
    p = PROBS[2:3].clone().requires_grad_(True)
    VarRatio().score_probs(p).sum().backward()
    torch.testing.assert_close(p.grad, torch.tensor([[-1.0, 0.0, 0.0, 0.0]]))


def test_top_k_takes_the_largest_and_breaks_ties_reproducibly():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.2, 0.9])
    first = top_k(scores, 2, torch.Generator().manual_seed(0))
    assert set(first.tolist()) <= {1, 3, 5}
    again = top_k(scores, 2, torch.Generator().manual_seed(0))
    assert first.tolist() == again.tolist()
    assert set(top_k(scores, 4, torch.Generator().manual_seed(1)).tolist()) == {1, 3, 5, 2}
    # over many seeds, every tied candidate gets picked sometimes
    picked = {
        i for s in range(30) for i in top_k(scores, 1, torch.Generator().manual_seed(s)).tolist()
    }
    assert picked == {1, 3, 5}


def _ctx(seed=0):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(40, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    data = ActiveDataset("toy", x, y, x[:5], y[:5], 3)
    torch.manual_seed(0)
    model = cnn(in_channels=1, num_classes=3)
    return AcquisitionContext(
        model, data, torch.arange(5), torch.Generator().manual_seed(seed), score_batch_size=7
    )


def test_score_acquisition_selects_the_top_scores_in_batches():
    ctx = _ctx()
    candidates = torch.arange(10, 40)
    acq = MaxEntropy()
    chosen = acq.select(ctx, candidates, 5)
    assert ctx.model.training  # select() restores the mode it found
    with torch.no_grad():
        ctx.model.eval()
        direct = acq.score_logits(ctx.model(ctx.data.x_train[candidates]))
    expected = candidates[torch.topk(direct, 5).indices]
    assert set(chosen.tolist()) == set(expected.tolist())


def test_random_acquisition_is_a_seeded_uniform_sample():
    candidates = torch.arange(100, 200)
    a = RandomAcquisition().select(_ctx(seed=3), candidates, 10)
    b = RandomAcquisition().select(_ctx(seed=3), candidates, 10)
    c = RandomAcquisition().select(_ctx(seed=4), candidates, 10)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert len(set(a.tolist())) == 10 and set(a.tolist()) <= set(candidates.tolist())
