"""BGADL: Bayesian Generative Active Deep Learning (Tran et al., ICML 2019; docs/methods.md §11).

The acquisition (BALD in Table 1) selects; then a VAE-ACGAN, warm-started across iterations,
is trained on the labeled set and generates one synthetic labelled sample x' = G(z ~ E(x), y)
per acquired point. The synthetic samples stay in the training set for the rest of the run.

Per iteration (in ``begin_iteration``, so its time counts as acquisition time, as Table 1's
BGADL Time column does), ``gan_epochs`` passes over L in batches of min(batch_size, |L|),
with z ~ N(0, I) and the classifier C as the ACGAN's auxiliary classifier:

1. E step: MSE(G(reparam(E(x)), y), x) + KL (mean over batch and latent dimensions);
2. G step: BCE(D(G(z, y)), 1) + CE(C(G(z, y)), y) + recon_weight * MSE(G(E(x), y), x);
3. D step: BCE(D(x), 1) + BCE(D(G(z, y)), 0) + BCE(D(G(E(x), y)), 0), on the G step's samples.

The reference also takes a C step on real and generated images inside this loop. Here C is
frozen (eval mode) while the GAN trains, and it learns from L plus the synthetic set in the
common protocol's training that follows ([D]; the loop owns the classifier's optimiser).
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from ..acquisition.base import AcquisitionContext
from ..data.base import ActiveDataset
from ..errors import ConfigError
from ..progress import phase
from .base import Augment
from .infomixup import _FrozenEval
from .policy import count_parameters
from .vae_acgan import Discriminator, Encoder, Generator, check_image_size

log = logging.getLogger(__name__)


def pixel_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (min, max) of normalised images, shaped (1, C, 1, 1).

    The GAN works on [0, 1] images, the classifier on normalised ones. The dataset keeps only
    the normalised tensor, so the map between the two is taken from its range: normalisation
    is affine per channel, and the darkest and brightest pixels of a 60k-image training split
    are 0 and 1 (exactly so for Fashion-MNIST, SVHN and CIFAR-10) [D].
    """
    lo, hi = x.amin(dim=(0, 2, 3)), x.amax(dim=(0, 2, 3))
    hi = torch.where(hi > lo, hi, lo + 1)  # a constant channel maps to 0
    return lo.view(1, -1, 1, 1), hi.view(1, -1, 1, 1)


class BGADL(Augment):
    """BGADL (``augment=bgadl``, Table 1 with ``acquisition=bald``); see the module docstring.

    ``width`` scales G and D: 0.5 (default, ~3.8M parameters with E on Fashion-MNIST) or 1.0
    (the reference's ~13.6M). CSV columns: ``enc_loss``, ``gen_loss``, ``disc_loss``, the
    three losses' mean per batch in the iteration's last GAN epoch, and ``n_synthetic``, the
    size of the accumulated synthetic set. If a GAN loss or a generated image is non-finite,
    the iteration's GAN update is undone and no sample is added (a warning is logged).
    """

    metric_names = ("enc_loss", "gen_loss", "disc_loss", "n_synthetic")

    def __init__(
        self,
        width: float = 0.5,
        latent_dim: int = 64,
        encoder_hidden: int = 256,
        gan_epochs: int = 10,
        batch_size: int = 64,
        lr: float = 2e-4,
        betas: Sequence[float] = (0.5, 0.999),
        recon_weight: float = 0.75,
    ) -> None:
        if not width > 0:
            raise ConfigError(
                f"augment.width must be > 0 (1.0 = the reference BGADL networks), got {width}"
            )
        for key, value in (
            ("latent_dim", latent_dim),
            ("encoder_hidden", encoder_hidden),
            ("gan_epochs", gan_epochs),
            ("batch_size", batch_size),
        ):
            if int(value) != value or value < 1:
                raise ConfigError(f"augment.{key} must be a positive integer, got {value!r}")
        if not lr > 0:
            raise ConfigError(f"augment.lr must be > 0, got {lr}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"augment.betas must be two numbers in [0, 1), got {list(betas)}")
        self.width, self.latent_dim, self.encoder_hidden = (
            float(width),
            int(latent_dim),
            int(encoder_hidden),
        )
        self.gan_epochs, self.batch_size, self.lr = int(gan_epochs), int(batch_size), float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.recon_weight = float(recon_weight)
        self.shape: Optional[tuple[int, int, int]] = (
            None  # (channels, image size, classes) of the networks
        )
        self.encoder: Optional[Encoder] = None
        self.generator: Optional[Generator] = None
        self.discriminator: Optional[Discriminator] = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.synthetic_x: Optional[torch.Tensor] = None
        self.synthetic_y: Optional[torch.Tensor] = None
        self._metrics: dict[str, float] = {}
        self._range_key: Optional[tuple[int, tuple[int, ...]]] = None
        self._range: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    # --- networks ------------------------------------------------------------------------------
    def _build(self, shape: tuple[int, int, int], device: torch.device) -> None:
        channels, size, classes = shape
        check_image_size(size)
        self.shape = shape
        self.encoder = encoder = Encoder(channels, size, self.latent_dim, self.encoder_hidden).to(
            device
        )
        self.generator = generator = Generator(
            channels, size, classes, self.latent_dim, self.width
        ).to(device)
        self.discriminator = discriminator = Discriminator(channels, size, self.width).to(device)
        self.optimizers = {
            name: torch.optim.Adam(net.parameters(), lr=self.lr, betas=self.betas)
            for name, net in (
                ("encoder", encoder),
                ("generator", generator),
                ("discriminator", discriminator),
            )
        }

    def _networks(self) -> tuple[Encoder, Generator, Discriminator]:
        """E, G and D; only once built (``shape`` is set)."""
        assert (
            self.encoder is not None
            and self.generator is not None
            and self.discriminator is not None
        )
        return self.encoder, self.generator, self.discriminator

    def _nets(self) -> dict[str, torch.nn.Module]:
        enc, gen, disc = self._networks()
        return {"encoder": enc, "generator": gen, "discriminator": disc}

    def _check_shape(self, data: ActiveDataset) -> None:
        shape = (data.in_channels, data.image_size, data.num_classes)
        if self.shape is None:
            self._build(shape, data.x_train.device)
        elif shape != self.shape:
            have, want = self.shape, shape
            raise ConfigError(
                f"BGADL's networks were built for {have[0]}x{have[1]}x{have[1]} images of {have[2]} classes, but the "
                f"data has {want[0]}x{want[1]}x{want[1]} images of {want[2]} classes (grayscale/colour or size "
                "mismatch); start this dataset in a fresh run directory (hydra.run.dir=...)"
            )

    def aux_parameters(self) -> int:
        """E + G + D (Table 1's "13M" at width 1.0)."""
        return (
            0 if self.shape is None else sum(count_parameters(net) for net in self._nets().values())
        )

    # --- the [0, 1] <-> normalised map ------------------------------------------------------
    def _unit_range(self, data: ActiveDataset) -> tuple[torch.Tensor, torch.Tensor]:
        key = (data.x_train.data_ptr(), tuple(data.x_train.shape))
        if key != self._range_key:
            self._range_key, self._range = key, pixel_range(data.x_train)
        assert self._range is not None
        return self._range

    # --- acquisition ---------------------------------------------------------------------------
    def choose_query(
        self, acquisition, ctx: AcquisitionContext, candidates: torch.Tensor, budget: int
    ) -> torch.Tensor:
        if budget < 2:
            # G's BatchNorm1d needs two samples in a batch to generate from the acquired points.
            raise ConfigError(
                f"BGADL generates from the batch of acquired points: protocol.query must be >= 2, got {budget}"
            )
        return acquisition.select(ctx, candidates, budget)

    def begin_iteration(self, ctx: AcquisitionContext, acquired: torch.Tensor) -> None:
        data = ctx.data
        self._check_shape(data)
        lo, hi = self._unit_range(data)
        before = copy.deepcopy(self._gan_state())  # to undo a diverged update
        with _FrozenEval(ctx.model):
            losses = self.train_gan(ctx.model, data, torch.cat([ctx.labeled, acquired]), lo, hi)
        with torch.no_grad():
            x_new = self.generate(data.x_train[acquired], data.y_train[acquired], lo, hi).to(
                data.x_train.dtype
            )
        # One host sync for the iteration.
        ok = bool(torch.isfinite(losses).all() & torch.isfinite(x_new).all())
        n_before = 0 if self.synthetic_y is None else int(self.synthetic_y.numel())
        if not ok:
            log.warning(
                "BGADL: a GAN loss or a generated image became non-finite; this iteration's GAN update is undone "
                "and no synthetic sample is added."
            )
            self._load_gan_state(before)
            self._metrics = {"n_synthetic": n_before}
            return
        y_new = data.y_train[acquired]
        if self.synthetic_x is None:
            self.synthetic_x, self.synthetic_y = x_new, y_new.clone()
        else:
            assert self.synthetic_y is not None  # set together with synthetic_x
            self.synthetic_x = torch.cat([self.synthetic_x, x_new])
            self.synthetic_y = torch.cat([self.synthetic_y, y_new])
        enc, gen, disc = losses[-1].tolist()
        self._metrics = {
            "enc_loss": enc,
            "gen_loss": gen,
            "disc_loss": disc,
            "n_synthetic": n_before + y_new.numel(),
        }

    def train_gan(
        self,
        classifier: torch.nn.Module,
        data: ActiveDataset,
        labeled: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
    ) -> torch.Tensor:
        """``gan_epochs`` passes of the E, G and D steps over ``labeled``; returns (epochs, 3) mean losses.

        Batches are near-equal splits of a shuffled L of at most ``batch_size`` each (never a
        batch of one, which BatchNorm1d cannot train on). No host sync.
        """
        enc, gen, disc = self._networks()
        opt = self.optimizers
        for net in (enc, gen, disc):
            net.train()
        device, n = labeled.device, labeled.numel()
        n_batches = math.ceil(n / self.batch_size)
        real, fake = torch.ones((), device=device), torch.zeros((), device=device)
        bce = lambda logits, target: F.binary_cross_entropy_with_logits(
            logits.float(), target.expand(logits.shape[0])
        )
        epochs = []
        for _ in phase(range(self.gan_epochs), "BGADL VAE-ACGAN epochs"):
            sums = torch.zeros(3, device=device)
            for rows in torch.tensor_split(labeled[torch.randperm(n, device=device)], n_batches):
                x, y = (data.x_train[rows] - lo) / (hi - lo), data.y_train[rows]
                # 1. E step: reconstruction through G, plus KL to N(0, I).
                mu, logvar = enc(x)
                mu, logvar = mu.float(), logvar.float()
                z_x = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
                kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
                loss_e = F.mse_loss(gen(z_x, y).float(), x) + kl
                _descend(opt["encoder"], loss_e)
                # 2. G step: fool D, be classified as y by C, reconstruct x.
                x_z = gen(torch.randn_like(mu), y)
                x_rec = gen(z_x.detach(), y)
                logits_c = classifier(x_z * (hi - lo) + lo)  # to the classifier's normalisation
                loss_g = (
                    bce(disc(x_z), real)
                    + F.cross_entropy(logits_c.float(), y)
                    + self.recon_weight * F.mse_loss(x_rec.float(), x)
                )
                _descend(opt["generator"], loss_g)
                # 3. D step: real against both kinds of generated images.
                loss_d = (
                    bce(disc(x), real)
                    + bce(disc(x_z.detach()), fake)
                    + bce(disc(x_rec.detach()), fake)
                )
                _descend(opt["discriminator"], loss_d)
                sums += torch.stack([loss_e.detach(), loss_g.detach(), loss_d.detach()])
            epochs.append(sums / n_batches)
        return torch.stack(epochs)

    def generate(
        self, x: torch.Tensor, y: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
    ) -> torch.Tensor:
        """x' = G(z, y) with z ~ q(z | x) = E(x), for normalised ``x``; returns normalised images.

        E and G stay in train mode (batch statistics over the acquired points), the mode
        they are trained in; their running statistics are never used.
        """
        enc, gen, _ = self._networks()
        mu, logvar = enc((x - lo) / (hi - lo))
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return gen(z, y) * (hi - lo) + lo

    # --- training data -------------------------------------------------------------------------
    def extra_training_data(self) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        if self.synthetic_y is None:
            return None
        assert self.synthetic_x is not None  # set together with synthetic_y
        return self.synthetic_x, self.synthetic_y

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)

    # --- checkpoint ----------------------------------------------------------------------------
    def _gan_state(self) -> dict[str, Any]:
        return {
            **{name: net.state_dict() for name, net in self._nets().items()},
            **{f"{name}_optimizer": o.state_dict() for name, o in self.optimizers.items()},
        }

    def _load_gan_state(self, state: Mapping[str, Any]) -> None:
        for name, net in self._nets().items():
            net.load_state_dict(state[name])
            self.optimizers[name].load_state_dict(state[f"{name}_optimizer"])

    def state_dict(self) -> dict[str, Any]:
        if self.shape is None:
            return {}
        return {
            "shape": self.shape,
            **self._gan_state(),
            "synthetic_x": self.synthetic_x,
            "synthetic_y": self.synthetic_y,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        device = next(iter(state["encoder"].values())).device
        self._build(tuple(state["shape"]), device)
        self._load_gan_state(state)
        self.synthetic_x, self.synthetic_y = state["synthetic_x"], state["synthetic_y"]


def _descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One gradient step of ``optimizer`` on ``loss``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
