import json
import subprocess

import pytest
import torch

from helpers import REPO, read_csv, tiny_protocol, toy_run
from ladarun.acquisition import RandomAcquisition
from ladarun.augment import Augment
from ladarun.errors import ConfigError
from ladarun.loop import check_budget, initial_labeled
from ladarun.rundir.metrics import BASE_COLUMNS


def test_run_writes_one_row_per_iteration_and_a_summary(tmp_path):
    summary = toy_run(tmp_path)
    rows = read_csv(tmp_path / "metrics.csv")
    # the base columns, then val_acc: empty without a validation set (protocol.val_size=0)
    assert list(rows[0].keys()) == [*BASE_COLUMNS, "val_acc"]
    assert {r["val_acc"] for r in rows} == {""}
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2, 3]
    assert [int(r["n_labeled"]) for r in rows] == [6, 11, 16, 21]
    best = [float(r["best_acc"]) for r in rows]
    accs = [float(r["test_acc"]) for r in rows]
    assert best == sorted(best) and best[-1] == max(accs)
    assert float(rows[0]["acquire_s"]) == 0.0 and all(float(r["acquire_s"]) > 0 for r in rows[1:])
    info = json.loads((tmp_path / "summary.json").read_text())
    assert info["best_acc"] == pytest.approx(max(accs), abs=1e-3)
    assert info["final_acc"] == pytest.approx(accs[-1], abs=1e-3)
    assert info["n_labeled"] == 21 and summary.n_labeled == 21
    assert {"torch", "torchvision", "python", "ladarun"} <= set(info["versions"])
    # The code it ran: this checkout's commit, and whether its code differed from it.
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode == 0:
        assert info["code"]["commit"] == head.stdout.strip()
        assert isinstance(info["code"]["dirty"], bool)


def test_same_seed_same_csv_other_seed_differs(tmp_path):
    toy_run(tmp_path / "a", seed=1)
    toy_run(tmp_path / "b", seed=1)
    toy_run(tmp_path / "c", seed=2)
    a, b, c = (read_csv(tmp_path / d / "metrics.csv") for d in "abc")
    key = lambda rows: [(r["test_acc"], r["train_loss"]) for r in rows]
    assert key(a) == key(b)
    assert key(a) != key(c)


@pytest.mark.parametrize("reinit", [True, False])
def test_reinit_restarts_every_iteration_from_the_initial_weights(tmp_path, monkeypatch, reinit):
    import ladarun.loop as loop_module

    real_train_epoch = loop_module.train_epoch
    starts = []  # the weights each epoch starts from; epochs=1, so one entry per iteration

    def recording_train_epoch(model, optimizer, *args, **kwargs):
        starts.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
        return real_train_epoch(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(loop_module, "train_epoch", recording_train_epoch)
    toy_run(tmp_path, reinit=reinit, initial_epochs=1, epochs=1)
    assert len(starts) == 4 and len(read_csv(tmp_path / "metrics.csv")) == 4
    for later in starts[1:]:
        assert torch.equal(later, starts[0]) == reinit


def test_whole_pool_when_pool_subset_is_null(tmp_path):
    toy_run(tmp_path, pool_subset=None, acquisition=RandomAcquisition())
    assert int(read_csv(tmp_path / "metrics.csv")[-1]["n_labeled"]) == 21


class Recorder(Augment):
    """Checks the augmentation seam: acquire, begin_iteration, one extra step per epoch, metrics."""

    metric_names = ("extra_steps",)

    def __init__(self):
        self.acquired = []
        self.steps = 0

    def begin_iteration(self, ctx, acquired):
        assert (
            ctx.labeled.unsqueeze(1) != acquired.unsqueeze(0)
        ).all()  # ctx.labeled is before acquisition
        self.acquired.append(acquired.clone())
        self.steps = 0

    def extra_step(self, model, optimizer):
        self.steps += 1
        return None

    def metrics(self):
        return {"extra_steps": self.steps}


def test_augment_seam_is_called_per_iteration_and_epoch(tmp_path):
    aug = Recorder()
    toy_run(tmp_path, augment=aug, epochs=3)
    rows = read_csv(tmp_path / "metrics.csv")
    assert "extra_steps" in rows[0]
    assert len(aug.acquired) == 3
    assert aug.steps == 3  # the last iteration's 3 epochs
    picked = torch.cat(aug.acquired)
    assert picked.unique().numel() == 15  # never the same point twice


def test_initial_labeled_set_is_class_balanced():
    y = torch.arange(100) % 5
    idx = initial_labeled(y, 5, 2, torch.Generator().manual_seed(0))
    assert torch.bincount(y[idx], minlength=5).tolist() == [2] * 5
    with pytest.raises(ConfigError, match="initial_per_class"):
        initial_labeled(y, 5, 30, torch.Generator().manual_seed(0))


def test_budget_errors_name_the_fix():
    with pytest.raises(ConfigError, match="larger than the unlabeled pool"):
        check_budget(tiny_protocol(query=50, pool_subset=None), n_train=40, n_initial=4)
    with pytest.raises(ConfigError, match="iterations <= 3"):
        check_budget(
            tiny_protocol(iterations=10, query=10, pool_subset=None), n_train=40, n_initial=4
        )


@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_iterations_is_an_error(bad):
    with pytest.raises(ConfigError, match="protocol.iterations must be a positive integer"):
        tiny_protocol(iterations=bad)


def test_pool_subset_smaller_than_query_is_an_error():
    with pytest.raises(ConfigError, match="pool_subset"):
        tiny_protocol(query=10, pool_subset=5)
