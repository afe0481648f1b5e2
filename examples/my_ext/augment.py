import torch

from ladarun.augment import Augment
from ladarun.augment.mixing import beta, virtual_step


class InputMixup(Augment):
    """Select by the acquisition; every epoch, one step on input mixes of random pairs of the new points."""

    metric_names = ("mixup_alpha",)

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = float(alpha)
        self._new = None

    def begin_iteration(self, ctx, acquired):
        self._new, self._data = acquired, ctx.data

    def extra_step(self, model, optimizer):
        if self._new is None or self._new.numel() < 2:
            return None
        order = self._new[torch.randperm(self._new.numel(), device=self._new.device)]
        half = order.numel() // 2
        first, second = order[:half], order[half : 2 * half]
        lam = beta(torch.full((half,), self.alpha, device=first.device)).sample()
        return virtual_step(model, optimizer, self._data, first, second, lam, k=0)

    def metrics(self):
        return {"mixup_alpha": self.alpha}
