"""Augmentations hook into Algorithm 1 at these places.

1. ``choose_query``: the augmentation owns selection. The default defers to the
   acquisition's ``select``; a look-ahead augmentation (LADA's InfoMixup, InfoSTN) overrides
   it to score virtual instances with the acquisition's per-instance score (see
   acquisition/base.py), and AdaMixup, Manifold Mixup and BGADL to add their own steps.
2. ``begin_iteration``: told which points were just labeled, before training starts.
3. ``extra_step``: called once per training epoch after the pass over the labeled set,
   to take a step on virtual instances (Eq. 17-19). The default does nothing.
4. ``extra_training_data``: labelled examples that join every labeled pass (BGADL's
   synthetic set); None by default.

``metrics`` returns values for the per-iteration CSV (columns named in ``metric_names``),
read once per iteration after training, so it may report on the training epochs;
``state_dict``/``load_state_dict`` carry whatever persists across iterations, so a run
resumes exactly; ``aux_parameters`` is the Param column of Table 1.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

from ..acquisition.base import Acquisition, AcquisitionContext
from ..errors import ConfigError
from ..protocol import Protocol


class Augment:
    metric_names: tuple[str, ...] = ()
    #: True when ``choose_query`` needs the acquisition's per-instance score (look-ahead methods).
    needs_per_instance_score: bool = False
    #: For queries.csv, aligned with the last ``choose_query``'s result: the scores it ranked by,
    #: when the augmentation ranks by its own (else the acquisition's ``query_scores`` are used),
    #: and each point's pair partner (methods that label pairs). The loop clears both first.
    query_scores: Optional[torch.Tensor] = None
    query_partners: Optional[torch.Tensor] = None

    def check_compatible(self, acquisition: Acquisition, acquisition_name: str) -> None:
        """Raise ConfigError when this augmentation cannot work with ``acquisition``."""
        if self.needs_per_instance_score and not acquisition.per_instance:
            raise ConfigError(
                f"acquisition={acquisition_name} selects a batch and has no per-instance score, so it "
                f"cannot drive the look-ahead augmentation {type(self).__name__}; use acquisition=ent, "
                f"var, margin, vaal or bald with it, or augment=none with {acquisition_name}"
            )

    def check_protocol(self, protocol: Protocol) -> None:
        """Raise ConfigError when this augmentation cannot run ``protocol`` (checked before a
        run writes or trains anything)."""

    def choose_query(
        self,
        acquisition: Acquisition,
        ctx: AcquisitionContext,
        candidates: torch.Tensor,
        budget: int,
    ) -> torch.Tensor:
        """The ``budget`` dataset indices to label next, out of ``candidates``.

        Algorithm 1 asks the augmentation, not the acquisition, so that a look-ahead method can
        score the virtual instances it would train on; by default the acquisition decides.
        """
        return acquisition.select(ctx, candidates, budget)

    def begin_iteration(self, ctx: AcquisitionContext, acquired: torch.Tensor) -> None:
        """Called after acquisition with the dataset indices just labeled."""

    def extra_step(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> Optional[tuple[torch.Tensor, int]]:
        """One extra optimisation step per epoch.

        Returns (summed loss as a 0-d device tensor, number of instances it covered), or None.
        """
        return None

    def extra_training_data(self) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Extra (images, labels) on the device that join every pass over the labeled set."""
        return None

    def metrics(self) -> dict[str, float]:
        return {}

    def aux_parameters(self) -> int:
        """Parameters of auxiliary networks (Table 1's Param column); 0 when there are none."""
        return 0

    def state_dict(self) -> dict[str, Any]:
        """Everything that persists across iterations, for resume (per-iteration state needs none)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class NoAugment(Augment):
    """Plain Algorithm 1: the acquisition alone, no virtual instances."""
