"""VAAL (Sinha et al. 2019; repo sinhasam/vaal), docs/methods.md §6, and its LADA_VaalMix seam (§9.5).

A VAE and a discriminator D on the VAE's latent mean play a minimax game: D learns to tell
labeled from unlabeled images, the VAE learns to make every image look labeled. The images D
is surest are unlabeled are queried: ``u(x) = 1 - D(mu(x))``.

Differences from the original, all from docs/methods.md §6 [D]:
- the original retrains both nets from scratch for ~100 epochs per cycle; here they are
  warm-started across iterations (their weights and Adam states live in ``state_dict``, so a
  resumed run continues them) and trained for ``steps`` adversarial iterations per
  acquisition, on batches of 64 labeled (with replacement) and 64 unlabeled images (the pool);
- images smaller than 32x32 are zero-padded (in normalised space) to 32x32, the size the
  architecture is built for (Fashion: 2 pixels per side);
- D returns a logit and the BCE losses use ``binary_cross_entropy_with_logits`` (the same loss,
  numerically safer, and allowed under autocast); ``u`` applies the sigmoid, and the query is
  ranked by the logit (the same order, with no float32 ties at ``u = 1``).

Scoring is in the original's mode [O]: its sampler never calls ``.eval()``, so the VAE's
BatchNorm normalises each scoring batch with that batch's statistics, as it did for the
unlabeled batches D was trained on. Here the candidates are encoded in batches of the training
batch size with batch statistics but without updating the running ones (``batch_statistics``),
so scoring changes no state and a resumed run scores identically. (Eval-mode running statistics
average labeled and unlabeled batches and put mu off the distribution D was trained on.)

Table 1's Param column for VAAL (301K) matches D alone (280,065 at latent 32; §6, §12), so
``aux_parameters`` counts D only. The VAE (22,835,139 parameters at nc = 3, width 1) is not
counted; ``vae_parameters`` reports it.

Cost: the full-width VAE is ~0.5 GMAC per 32x32 image forward; one adversarial iteration
(2 VAE steps on 64 + 64 images, 1 D step) is several TFLOP, so the default 500 steps are a GPU
setting. ``width`` scales every VAE channel count (parameters ~ width^2) for CPU work.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..progress import phase
from .base import Acquisition, AcquisitionContext, PairScorer, pair_lambdas, top_k
from .passes import check_enough_candidates, eval_mode

log = logging.getLogger(__name__)

VAE_SIZE = 32  # the architecture's input size: four stride-2 convs take 32x32 to 2x2


def _kaiming_init(module: nn.Module) -> None:
    """Kaiming normal for Linear/Conv weights, zero biases, BatchNorm weight 1 and bias 0 (§6)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """BatchNorm on each batch's own statistics without touching the running ones; restored on exit.

    Every BatchNorm layer of ``module`` is put in training mode with ``track_running_stats``
    off: PyTorch then normalises with the batch mean and (biased) variance and passes no running
    buffers to ``F.batch_norm``, so neither they nor ``num_batches_tracked`` change. (Training
    mode with a momentum of 0 would also leave the means in place but still count batches, and
    a save/restore would copy every buffer per batch.) Other layers keep their mode.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:
        m.train(True)
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, (training, track) in zip(norms, saved):
            m.train(training)
            m.track_running_stats = track


def _channels(width: float) -> list[int]:
    return [max(1, int(round(c * width))) for c in (128, 256, 512, 1024)]


class VAE(nn.Module):
    """VAAL's VAE for 32x32 images (§6); ``width`` scales the channel counts (1 = the original)."""

    def __init__(self, in_channels: int, latent_dim: int = 32, width: float = 1.0):
        super().__init__()
        c = _channels(width)
        enc, cin = [], in_channels
        for cout in c:  # 32 -> 16 -> 8 -> 4 -> 2
            enc += [
                nn.Conv2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.fc_mu = nn.Linear(c[3] * 2 * 2, latent_dim)
        self.fc_logvar = nn.Linear(c[3] * 2 * 2, latent_dim)
        dec = [nn.Linear(latent_dim, c[3] * 4 * 4), nn.Unflatten(1, (c[3], 4, 4))]
        for cin, cout in ((c[3], c[2]), (c[2], c[1]), (c[1], c[0])):  # 4 -> 8 -> 16 -> 32
            dec += [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        dec.append(nn.ConvTranspose2d(c[0], in_channels, 1))  # no output activation
        self.decoder = nn.Sequential(*dec)
        _kaiming_init(self)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(x)
        return self.fc_mu(code), self.fc_logvar(code)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, mu, logvar); z = mu + eps * exp(logvar / 2) is decoded."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


class Discriminator(nn.Module):
    """z -> 512 -> 512 -> 1 MLP on the latent mean; returns the logit of "labeled" (§6)."""

    def __init__(self, latent_dim: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, 1),
        )
        _kaiming_init(self)

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        return self.net(mu).squeeze(-1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def discriminator_parameters(latent_dim: int) -> int:
    """Size of ``Discriminator(latent_dim)`` without building one (which would draw random numbers)."""
    return (latent_dim + 1) * 512 + (512 + 1) * 512 + (512 + 1)


def vae_loss(
    x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> torch.Tensor:
    """MSE (mean) + beta * KL (summed over the batch and the latent dimensions), as the original."""
    mu, logvar = mu.float(), logvar.float()
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return F.mse_loss(recon.float(), x.float()) + beta * kl


class VAAL(Acquisition):
    """``acquisition=vaal``; also the base score of LADA_VaalMix (``augment=infomixup``).

    ``steps`` adversarial iterations per acquisition (500), each ``vae_steps`` (2) VAE steps
    and one D step on fresh batches of ``batch_size`` (64) labeled and unlabeled images;
    Adam ``lr`` (5e-4) for both; ``beta`` weighs the KL, ``adversary_weight`` the VAE's
    adversarial term (1, 1); ``width`` scales the VAE's channels (1 = the original).
    """

    per_instance = True
    pair_scorer_reads_maps = False  # its pairs mix latent means (§9.5)
    metric_names = (
        "vaal_vae_loss",
        "vaal_disc_loss",
        "vaal_score",
        "vaal_score_candidates",
        "vaal_pick_classes",
        "vaal_pick_max_share",
    )

    def __init__(
        self,
        steps: int = 500,
        vae_steps: int = 2,
        batch_size: int = 64,
        latent_dim: int = 32,
        lr: float = 5e-4,
        beta: float = 1.0,
        adversary_weight: float = 1.0,
        width: float = 1.0,
    ) -> None:
        for key, value in (
            ("steps", steps),
            ("vae_steps", vae_steps),
            ("batch_size", batch_size),
            ("latent_dim", latent_dim),
        ):
            if int(value) != value or value < 1:
                raise ConfigError(f"acquisition.{key} must be a positive integer, got {value!r}")
        for key, positive in (("lr", lr), ("width", width)):
            if not positive > 0:
                raise ConfigError(f"acquisition.{key} must be > 0, got {positive!r}")
        for key, weight in (("beta", beta), ("adversary_weight", adversary_weight)):
            if not weight >= 0:
                raise ConfigError(f"acquisition.{key} must be >= 0, got {weight!r}")
        self.steps, self.vae_steps, self.batch_size = int(steps), int(vae_steps), int(batch_size)
        self.latent_dim, self.lr, self.beta = int(latent_dim), float(lr), float(beta)
        self.adversary_weight, self.width = float(adversary_weight), float(width)
        self.in_channels: Optional[int] = None
        self.vae: Optional[VAE] = None
        self.disc: Optional[Discriminator] = None
        self.vae_opt: Optional[torch.optim.Optimizer] = None
        self.disc_opt: Optional[torch.optim.Optimizer] = None
        self._metrics: dict[str, torch.Tensor] = {}

    # --- the networks ------------------------------------------------------------------------
    def _build(self, in_channels: int, device: torch.device) -> None:
        self.in_channels = in_channels
        self.vae = vae = VAE(in_channels, self.latent_dim, self.width).to(device)
        self.disc = disc = Discriminator(self.latent_dim).to(device)
        self.vae_opt = torch.optim.Adam(vae.parameters(), lr=self.lr)
        self.disc_opt = torch.optim.Adam(disc.parameters(), lr=self.lr)
        log.info(
            "VAAL: VAE with %d parameters (width %g), discriminator with %d",
            count_parameters(vae),
            self.width,
            count_parameters(disc),
        )

    def _parts(self) -> tuple[VAE, Discriminator, torch.optim.Optimizer, torch.optim.Optimizer]:
        """The VAE, D and their optimizers; only once built (``_build``)."""
        assert self.vae is not None and self.disc is not None
        assert self.vae_opt is not None and self.disc_opt is not None
        return self.vae, self.disc, self.vae_opt, self.disc_opt

    @staticmethod
    def vae_input(x: torch.Tensor) -> torch.Tensor:
        """Zero-pad (normalised) images to 32x32, centred; 28x28 gets 2 pixels per side."""
        h, w = x.shape[-2:]
        if h > VAE_SIZE or w > VAE_SIZE:
            raise ConfigError(
                f"acquisition=vaal: the VAE is built for images up to {VAE_SIZE}x{VAE_SIZE}, got {h}x{w}; "
                "use a dataset with images of at most 32x32 pixels"
            )
        if (h, w) == (VAE_SIZE, VAE_SIZE):
            return x
        top, left = (VAE_SIZE - h) // 2, (VAE_SIZE - w) // 2
        return F.pad(x, (left, VAE_SIZE - w - left, top, VAE_SIZE - h - top))

    def _ensure_built(self, ctx: AcquisitionContext) -> None:
        x = ctx.data.x_train
        self.vae_input(x[:1])  # size check before building anything
        if self.vae is None:
            self._build(int(x.shape[1]), x.device)
        elif self.in_channels != x.shape[1]:
            raise ConfigError(
                f"VAAL's networks were built for {self.in_channels} channels, the data has {x.shape[1]}"
            )

    def _require_trained(self) -> tuple[VAE, Discriminator]:
        """The VAE and D, once ``prepare`` built them."""
        if self.vae is None or self.disc is None:
            raise RuntimeError("VAAL.prepare(ctx) must run before VAAL scores anything")
        return self.vae, self.disc

    def vae_parameters(self) -> int:
        return count_parameters(self.vae) if self.vae is not None else 0

    def aux_parameters(self) -> int:
        """The discriminator only, as the paper's Param column (280,065 at latent 32)."""
        return discriminator_parameters(self.latent_dim)

    # --- training (once per iteration) -------------------------------------------------------
    def prepare(self, ctx: AcquisitionContext) -> None:
        """``steps`` adversarial iterations on the current labeled set and pool (warm start)."""
        labeled, pool = ctx.labeled, ctx.pool
        if labeled.numel() == 0 or pool.numel() == 0:
            raise ConfigError(
                f"acquisition=vaal needs labeled and unlabeled images to train its discriminator "
                f"(have {labeled.numel()} labeled, {pool.numel()} unlabeled); check protocol.initial_per_class "
                "and protocol.iterations x protocol.query against the dataset size"
            )
        self._ensure_built(ctx)
        vae, disc, vae_opt, disc_opt = self._parts()
        x = ctx.data.x_train
        # All batch indices at once from the run's generator: one host-to-device copy, and no
        # host sync inside the loop (the losses stay on the device too).
        shape = (self.steps, self.vae_steps + 1, self.batch_size)
        lab_idx = labeled[
            torch.randint(labeled.numel(), shape, generator=ctx.generator).to(labeled.device)
        ]
        pool_idx = pool[torch.randint(pool.numel(), shape, generator=ctx.generator).to(pool.device)]
        tail = max(1, self.steps // 10)  # the reported losses: means over the last 10% of steps
        vae_sum = torch.zeros((), device=x.device)
        disc_sum = torch.zeros((), device=x.device)
        ones = torch.ones(self.batch_size, device=x.device)
        zeros = torch.zeros(self.batch_size, device=x.device)
        vae.train()
        disc.train()
        with torch.enable_grad():
            for step in phase(range(self.steps), "VAAL adversarial steps"):
                # The VAE's steps differentiate through D to mu only: D's weight gradients would
                # be computed and then discarded by the D step's zero_grad.
                disc.requires_grad_(False)
                for v in range(self.vae_steps):
                    x_l = self.vae_input(x[lab_idx[step, v]])
                    x_u = self.vae_input(x[pool_idx[step, v]])
                    rec = self._vae_step(vae, disc, vae_opt, x_l, x_u, ones)
                x_l = self.vae_input(x[lab_idx[step, -1]])
                x_u = self.vae_input(x[pool_idx[step, -1]])
                d_loss = self._disc_step(vae, disc, disc_opt, x_l, x_u, (ones, zeros))
                if step >= self.steps - tail:
                    vae_sum += rec.detach()
                    disc_sum += d_loss.detach()
        disc_opt.zero_grad(set_to_none=True)  # the last D step's gradients: nothing reads them
        vae.eval()
        disc.eval()
        # frozen until the next prepare: scores differentiate in lambda only
        disc.requires_grad_(False)
        self._metrics = {"vaal_vae_loss": vae_sum / tail, "vaal_disc_loss": disc_sum / tail}

    def _vae_step(self, vae, disc, vae_opt, x_l, x_u, ones) -> torch.Tensor:
        """One VAE step on a labeled and an unlabeled batch: reconstruct both and make D call
        both "labeled"; returns the reconstruction loss."""
        recon_l, mu_l, logvar_l = vae(x_l)
        recon_u, mu_u, logvar_u = vae(x_u)
        rec = vae_loss(x_l, recon_l, mu_l, logvar_l, self.beta) + vae_loss(
            x_u, recon_u, mu_u, logvar_u, self.beta
        )
        # The VAE wants D to call everything "labeled" (target 1).
        adv = F.binary_cross_entropy_with_logits(
            disc(mu_l).float(), ones
        ) + F.binary_cross_entropy_with_logits(disc(mu_u).float(), ones)
        vae_opt.zero_grad(set_to_none=True)
        (rec + self.adversary_weight * adv).backward()
        vae_opt.step()
        return rec

    def _disc_step(self, vae, disc, disc_opt, x_l, x_u, targets) -> torch.Tensor:
        """One D step: labeled latent means to 1, unlabeled to 0; returns D's loss."""
        ones, zeros = targets
        with torch.no_grad():
            mu_l = vae.encode(x_l)[0]
            mu_u = vae.encode(x_u)[0]
        disc.requires_grad_(True)
        d_loss = F.binary_cross_entropy_with_logits(
            disc(mu_l).float(), ones
        ) + F.binary_cross_entropy_with_logits(disc(mu_u).float(), zeros)
        disc_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        disc_opt.step()
        return d_loss

    # --- scoring -------------------------------------------------------------------------------
    def encode_mu(self, x: torch.Tensor) -> torch.Tensor:
        """mu of one batch of images with BatchNorm on that batch's statistics (see ``latent_means``).

        The VAE's BatchNorm layers run in training mode with ``track_running_stats`` switched off
        for the call: ``F.batch_norm`` then normalises with the batch's own mean and variance and is
        handed no running buffers, so ``running_mean``/``running_var``/``num_batches_tracked`` are
        left exactly as they were (scoring changes no state; a resumed run scores identically).
        """
        vae, _ = self._require_trained()
        with batch_statistics(vae):
            return vae.encode(self.vae_input(x))[0].float()

    @torch.no_grad()
    def latent_means(self, ctx: AcquisitionContext, indices: torch.Tensor) -> torch.Tensor:
        """mu(x) of ``x_train[indices]`` in the mode of the original sampler; (N, latent_dim).

        sinhasam/vaal scores the unlabeled set with the VAE still in training mode (its sampler
        never calls ``.eval()``): BatchNorm uses the statistics of each scoring batch, as it did
        for the unlabeled batches D was trained on. Eval-mode (running) statistics mix the
        labeled and the unlabeled batches and give D latent means off its training distribution.
        So ``indices`` is split, in its order (the candidates come in a fresh random order), into
        ``ceil(N / batch_size)`` near-equal batches, the size of the unlabeled training batches;
        each is encoded on its own statistics (``encode_mu``). Deterministic given ``indices``;
        a point's mu depends on the batch it falls in, as in the original.
        """
        self._require_trained()
        n = indices.numel()
        if n == 0:
            return ctx.data.x_train.new_zeros(0, self.latent_dim)
        chunks = indices.tensor_split(math.ceil(n / self.batch_size))
        return torch.cat([self.encode_mu(ctx.data.x_train[c]) for c in chunks])

    def unlabeled_logit(self, mu: torch.Tensor) -> torch.Tensor:
        """``-logit D(mu)``, the logit of ``1 - D(mu)``: the same order, without its saturation."""
        _, disc = self._require_trained()
        with eval_mode(disc):
            return -disc(mu).float()

    def score_latent(self, mu: torch.Tensor) -> torch.Tensor:
        """``1 - D(mu)`` for latent means (..., latent_dim) -> (...); differentiable in ``mu``."""
        return torch.sigmoid(self.unlabeled_logit(mu))

    def select(
        self, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        check_enough_candidates("vaal", candidates.numel(), budget)
        self.prepare(ctx)
        with torch.no_grad():
            logits = self.unlabeled_logit(self.latent_means(ctx, candidates))
            scores = torch.sigmoid(logits)
        # Ranked by the logit: 1 - D(mu) rounds to exactly 1.0 in float32 once D's logit is below
        # about -17, and a saturated D would then leave the choice among those to the tie-break.
        chosen = top_k(logits, budget, ctx.generator)
        picked = candidates[chosen]
        self.query_scores = scores[chosen]
        self._metrics["vaal_score"] = scores[chosen].mean()
        self._metrics["vaal_score_candidates"] = scores.mean()
        # Logging only, after the choice: the classes of the query (labeled by the oracle next).
        counts = torch.bincount(ctx.data.y_train[picked], minlength=ctx.data.num_classes)
        self._metrics["vaal_pick_classes"] = (counts > 0).sum()
        self._metrics["vaal_pick_max_share"] = counts.max() / picked.numel()
        return picked

    def extra_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._metrics.items()}

    # --- look-ahead seams (LADA_VaalMix, §9.5) ---------------------------------------------
    def score_inputs(self, ctx: AcquisitionContext, x: torch.Tensor) -> torch.Tensor:
        """``1 - D(mu(x))`` of one batch ``x``, BatchNorm on the batch's statistics (``encode_mu``)."""
        return self.score_latent(self.encode_mu(x))

    def pair_scorer(self, ctx, first, second, k, h_first, h_second) -> PairScorer:
        """Pairs mixed in the VAE's latent-mean space; ``k`` and the classifier maps are unused.

        The virtual instance of ``(x_i, x'_i)`` with ``lam`` scores
        ``1 - D(lam mu(x_i) + (1 - lam) mu(x'_i))`` (§9.5), differentiable in ``lam`` through D.
        Both members' mu come from ``latent_means`` (batch statistics, as VAAL's own selection).

        Along the segment this score is U-shaped: measured on Fashion (protocol=quick, iterations
        1-3, 1000 pairs each), the maximum over lam in [0, 1] is at an end for every pair, and the
        mean score is 0.80 at the ends against 0.71 at lam = 0.5 (iteration 1), with under 1% of
        the ends above 0.99 and the same shape with eval-mode BatchNorm. So E[score] falls with
        tau (lam ~ Beta(tau, tau)), and LADA_VaalMix's policy drives tau to the floor of its
        sigmoid (~0.03-0.05 for all pairs): the optimum of Eq. 13 for this score, not a defect.
        """
        return _LatentPairScorer(
            self, self.latent_means(ctx, first), self.latent_means(ctx, second)
        )

    # --- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.vae is None:
            return {}
        vae, disc, vae_opt, disc_opt = self._parts()
        return {
            "in_channels": self.in_channels,
            "vae": vae.state_dict(),
            "disc": disc.state_dict(),
            "vae_opt": vae_opt.state_dict(),
            "disc_opt": disc_opt.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        device = next(iter(state["vae"].values())).device
        self._build(int(state["in_channels"]), device)
        vae, disc, vae_opt, disc_opt = self._parts()
        vae.load_state_dict(state["vae"])
        disc.load_state_dict(state["disc"])
        vae_opt.load_state_dict(state["vae_opt"])
        disc_opt.load_state_dict(state["disc_opt"])


class _LatentPairScorer(PairScorer):
    """Eq. 15's terms for VAAL: mu of both members cached once, mixes scored by D alone."""

    def __init__(self, acquisition: VAAL, mu_first: torch.Tensor, mu_second: torch.Tensor):
        self.acquisition, self.mu_first, self.mu_second = acquisition, mu_first, mu_second

    @torch.no_grad()
    def base(self) -> torch.Tensor:
        return self.acquisition.score_latent(self.mu_first) + self.acquisition.score_latent(
            self.mu_second
        )

    def mixed(self, lam: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.score_features(self.mixed_features(lam, rows))

    def mixed_features(self, lam: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(..., B, 1) D's logit of "unlabeled" for the mixed latent means (before the sigmoid)."""
        lam = pair_lambdas(lam, rows)
        a, b = self.mu_first[rows], self.mu_second[rows]  # (B, z)
        # lam * mu(x_i) + (1 - lam) * mu(x'_i), (..., B, z)
        mu = torch.lerp(b, a, lam.unsqueeze(-1).to(a.dtype))
        return self.acquisition.unlabeled_logit(mu).unsqueeze(-1)

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(features.squeeze(-1))
