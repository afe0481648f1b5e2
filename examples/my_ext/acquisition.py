import torch

from ladarun.acquisition import Acquisition, MaxEntropy, ScoreAcquisition, top_k
from ladarun.acquisition.base import PairScorer, pair_lambdas


class Margin(ScoreAcquisition):
    """1 - (p_first - p_second): largest where the two most probable classes are closest."""

    def score_probs(self, probs: torch.Tensor) -> torch.Tensor:
        top2 = probs.topk(2, dim=1).values
        return 1.0 - (top2[:, 0] - top2[:, 1])


class EntropyShortlist(Acquisition):
    """The `factor * budget` most uncertain candidates, then a seeded random `budget` of them."""

    metric_names = ("shortlist_entropy",)

    def __init__(self, factor: int = 3) -> None:
        self.factor = int(factor)
        self.entropy = MaxEntropy()
        self._mean = float("nan")

    def select(self, ctx, candidates, budget):
        scores = self.entropy.scores(ctx, candidates)  # eval mode, batched, no grad
        shortlist = top_k(scores, min(candidates.numel(), self.factor * budget), ctx.generator)
        order = torch.randperm(shortlist.numel(), generator=ctx.generator).to(shortlist.device)
        chosen = shortlist[order[:budget]]
        self._mean = float(scores[shortlist].mean())
        return candidates[chosen]

    def extra_metrics(self):
        return {"shortlist_entropy": self._mean}


class EmbeddingNorm(Acquisition):
    """A toy score of its own: the norm of the classifier's embedding, with both look-ahead seams."""

    per_instance = True

    @torch.no_grad()
    def select(self, ctx, candidates, budget):
        ctx.model.eval()
        x = ctx.data.x_train
        scores = torch.cat(
            [ctx.model.embed(x[c]).norm(dim=1) for c in candidates.split(ctx.score_batch_size)]
        )
        return candidates[top_k(scores, budget, ctx.generator)]

    def score_inputs(self, ctx, x):  # InfoSTN
        return ctx.model.embed(x).norm(dim=1)

    def pair_scorer(self, ctx, first, second, k, h_first, h_second):  # InfoMixup
        return NormPairScorer(ctx.model, k, h_first, h_second)


class NormPairScorer(PairScorer):
    def __init__(self, model, k, h_first, h_second):
        self.model, self.k, self.h_first, self.h_second = model, k, h_first, h_second

    def _score(self, h):
        return self.model.embed_from(h, self.k).norm(dim=1)

    @torch.no_grad()
    def base(self):
        pairs = zip(self.h_first.split(100), self.h_second.split(100))
        return torch.cat([self._score(a) + self._score(b) for a, b in pairs])

    def mixed(self, lam, rows):
        lam = pair_lambdas(lam, rows)  # (S, B) or (B,)
        a, b = self.h_first[rows], self.h_second[rows]  # (B, C, H, W)
        w = lam.reshape(*lam.shape, 1, 1, 1).to(a.dtype)
        h = torch.lerp(b, a, w)  # lam * a + (1 - lam) * b (Eq. 12)
        return self._score(h.reshape(-1, *a.shape[1:])).view(lam.shape)
