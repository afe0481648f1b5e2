"""Toy contexts and a smoke-run check shared by the acquisition tests (test_bald, test_coreset, ...)."""
import csv
import math

import pytest
import torch

from ladarun.acquisition.base import AcquisitionContext
from ladarun.augment import Augment
from ladarun.cli import run_from_config
from ladarun.data.base import ActiveDataset
from ladarun.models import cnn

SMOKE = ["dataset=synthetic", "protocol=smoke", "progress=false"]


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread, then restore the setting.

    These tests push many tiny tensors; on a shared 2-core machine, two OpenMP threads
    spin-waiting for each other made them up to ~100x slower than one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def make_ctx(n=60, classes=3, labeled=6, dropout=0.0, seed=0, size=8, channels=1):
    """Random images, a fresh small CNN, the first ``labeled`` points labeled; score batches of 7."""
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, channels, size, size, generator=g)
    y = torch.arange(n) % classes
    data = ActiveDataset("toy", x, y, x[:5], y[:5], classes)
    torch.manual_seed(0)
    model = cnn(in_channels=channels, num_classes=classes, dropout=dropout)
    return AcquisitionContext(model, data, torch.arange(labeled), torch.Generator().manual_seed(seed), score_batch_size=7)


class LookAhead(Augment):
    """A stand-in look-ahead augmentation: it only declares that it needs a per-instance score."""

    needs_per_instance_score = True


def check_smoke_run(compose_cfg, tmp_path, name, columns, overrides=()):
    """``acquisition=name`` on the synthetic smoke protocol writes its CSV with ``columns`` filled."""
    run_from_config(compose_cfg(SMOKE + [f"acquisition={name}", *overrides]), tmp_path)
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["n_labeled"]) for r in rows] == [8, 12, 16]  # 4 classes x 2, then +4 per iteration
    assert list(rows[0])[-len(columns):] == list(columns)
    for r in rows[1:]:
        assert all(math.isfinite(float(r[c])) for c in columns)
