"""SimCLR (Chen et al. 2020) with a small CNN encoder, sized for a CPU (docs/methods.md §19).

Two random views of every image (a random resized crop, a horizontal flip, brightness and
contrast jitter, all drawn per image on the device) go through the encoder and a two-layer
projection head; the NT-Xent loss pulls the two views of an image together and pushes the other
``2 (B - 1)`` views of the batch away. The embedding is the encoder's pooled output, before the
projection head, L2-normalised, as TypiClust's and ProbCover's code use SimCLR features.

Every random number (initial weights, the order of the images, the views) comes from the
settings' own ``seed``, never from a run's streams: the embedding is a property of the dataset,
the same for every run and seed, and building it leaves the caller's random state untouched.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models import cnn
from ..models.staged import StagedClassifier
from ..progress import phase

log = logging.getLogger("ladarun")


@dataclass(frozen=True)
class SimCLR:
    """The embedding's settings (``conf/embedding/simclr.yaml``); every one changes the embedding."""

    name: str = "simclr"
    epochs: int = 15
    batch_size: int = 256
    temperature: float = 0.5
    lr: float = 1.0e-3  # Adam, cosine decay to 0 over the whole training
    width: int = 16  # the encoder: ladarun's CPU CNN with a global average pool (§2)
    stages: int = 5
    projection_dim: int = 64
    crop_scale: float = 0.3  # smallest area fraction of a random resized crop
    jitter: float = 0.4  # brightness and contrast jitter, applied to 80 % of the views
    seed: int = 0

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "width": self.width}
        for key, value in positive.items():
            if int(value) != value or value < 1:
                raise ConfigError(f"embedding.{key} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise ConfigError("embedding.batch_size must be at least 2 (NT-Xent needs negatives)")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ConfigError(f"embedding.crop_scale must be in (0, 1], got {self.crop_scale!r}")
        if self.temperature <= 0 or self.lr <= 0 or not 0 <= self.jitter < 1:
            raise ConfigError(
                "embedding.temperature and embedding.lr must be positive and embedding.jitter in "
                f"[0, 1); got {self.temperature!r}, {self.lr!r}, {self.jitter!r}"
            )

    def settings(self) -> dict[str, Any]:
        return asdict(self)

    def encoder(self, in_channels: int, image_size: int) -> StagedClassifier:
        # num_classes=1: the CNN's own head is never used, only its pooled features (embed).
        return cnn(
            in_channels, 1, width=self.width, stages=self.stages, pool_grid=1, image_size=image_size
        )

    def train(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Train on the images ``x`` (N, C, H, W); their (N, D) L2-normalised embedding and the
        encoder's weights (``embed`` embeds other images, e.g. a test split, with them)."""
        if x.shape[0] < 2:
            raise ConfigError("the embedding needs at least 2 training images")
        with torch.random.fork_rng(devices=[]):  # the caller's CPU stream is left as it was
            torch.manual_seed(self.seed)
            encoder = self.encoder(x.shape[1], x.shape[-1]).to(x.device)
            head = _projection_head(encoder.embed_dim, self.projection_dim).to(x.device)
        # float32 whatever the run's speed switches: the cache key does not record them
        with torch.autocast(x.device.type, enabled=False):
            return self._train(x, encoder, head)

    def _train(
        self, x: torch.Tensor, encoder: StagedClassifier, head: nn.Module
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        params = list(encoder.parameters()) + list(head.parameters())
        optimizer = torch.optim.Adam(params, lr=self.lr)
        steps = self.epochs * max(1, x.shape[0] // self.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        encoder.train(), head.train()
        for epoch in range(self.epochs):
            t0, loss = time.perf_counter(), self._epoch(x, encoder, head, optimizer, schedule, gen)
            log.info(
                "embedding: %s epoch %d/%d, NT-Xent %.4f, %.1f s",
                self.name,
                epoch + 1,
                self.epochs,
                loss,
                time.perf_counter() - t0,
            )
        state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
        return embed_all(encoder, x, self.batch_size), state

    def embed(self, state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised embedding of images ``x`` by the encoder ``state`` that ``train`` returned."""
        encoder = self.encoder(x.shape[1], x.shape[-1])
        encoder.load_state_dict(state)
        return embed_all(encoder.to(x.device), x, self.batch_size)

    def _epoch(self, x, encoder, head, optimizer, schedule, gen: torch.Generator) -> float:
        """One pass over ``x`` in random batches (the last, short one dropped); the mean loss."""
        order = torch.randperm(x.shape[0], generator=gen).to(x.device)
        batches = [b for b in order.split(self.batch_size) if b.numel() == self.batch_size]
        batches = batches or [order]  # fewer images than one batch: train on all of them
        total = 0.0
        for batch in phase(batches, desc="embedding"):
            views = random_views(x[batch], gen, self.crop_scale, self.jitter)
            z = head(encoder.embed(torch.cat(views)))
            loss = nt_xent(z, self.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        return total / len(batches)


def _projection_head(dim: int, out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, out))


@torch.no_grad()
def embed_all(encoder: StagedClassifier, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The encoder's pooled features of ``x`` in eval mode, L2-normalised, float32 on the CPU."""
    encoder.eval()
    out = [F.normalize(encoder.embed(chunk).float(), dim=1) for chunk in x.split(batch_size)]
    return torch.cat(out).cpu()


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss of (2B, d) projections whose rows ``i`` and ``i + B`` are two views."""
    n = z.shape[0] // 2
    z = F.normalize(z.float(), dim=1)
    sim = (z @ z.T) / temperature
    sim.fill_diagonal_(float("-inf"))  # a view is never its own negative
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, positive)


def random_views(
    x: torch.Tensor, gen: torch.Generator, crop_scale: float, jitter: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of the batch ``x``, every parameter drawn per image."""
    return _augment(x, gen, crop_scale, jitter), _augment(x, gen, crop_scale, jitter)


def _augment(x: torch.Tensor, gen: torch.Generator, crop_scale: float, jitter: float):
    """Random resized crop (area in [crop_scale, 1], aspect in [3/4, 4/3]) with a random flip, as
    one affine resampling per image, then brightness and contrast jitter on 80 % of the images."""
    n = x.shape[0]
    u = torch.rand(n, 6, generator=gen)
    area = crop_scale + (1.0 - crop_scale) * u[:, 0]
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, 1]
    w = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)
    h = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
    # crop centre, so the crop stays inside the image ([-1, 1] coordinates)
    cx, cy = (2 * u[:, 2] - 1) * (1 - w), (2 * u[:, 3] - 1) * (1 - h)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # brightness (a shift) and contrast (a scale about each image's mean), in normalised space
    on = (u[:, 5] < 0.8).to(x.device, x.dtype)
    shift = (torch.rand(n, generator=gen) * 2 - 1).to(x.device, x.dtype) * jitter * on
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1).to(x.device, x.dtype) * jitter * on
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return (out - mean) * scale.view(-1, 1, 1, 1) + mean + shift.view(-1, 1, 1, 1)
