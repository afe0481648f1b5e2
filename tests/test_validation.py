"""protocol.val_size and protocol.early_stopping on digits: a validation set drawn apart and never
trained on or acquired, early stopping that keeps the best validation epoch, val_acc and
best_val_test_acc; and committed runs (made before these keys existed) still finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers import REPO, SMOKE, read_csv, tiny_protocol, toy_run
from ladarun.acquisition import MaxEntropy
from ladarun.config import check_settings, compose
from ladarun.data import DigitsSource
from ladarun.errors import ConfigError
from ladarun.loop import VALIDATION, Experiment, Learner, RunOptions
from ladarun.models import cnn
from ladarun.report.runs import default_config
from ladarun.rundir.identity import check_existing
from ladarun.runner import run_from_config


def test_a_validation_set_is_drawn_apart_from_the_budget(tmp_path):
    toy_run(tmp_path / "plain")
    toy_run(tmp_path / "val", val_size=15)
    plain, val = (read_csv(tmp_path / d / "metrics.csv") for d in ("plain", "val"))
    assert [r["n_labeled"] for r in val] == [r["n_labeled"] for r in plain]  # not in the budget
    assert all(r["val_acc"] == "" for r in plain) and all(r["val_acc"] != "" for r in val)
    q_plain, q_val = (read_csv(tmp_path / d / "queries.csv") for d in ("plain", "val"))
    initial = [r["index"] for r in q_plain if r["iteration"] == "0"]
    assert initial == [r["index"] for r in q_val if r["iteration"] == "0"]  # the same start
    summary = json.loads((tmp_path / "val" / "summary.json").read_text())
    scored = [(float(r["val_acc"]), i) for i, r in enumerate(val)]
    best = max(scored)[1]  # ties: the later iteration
    assert summary["best_val_test_acc"] == float(val[best]["test_acc"])
    assert (
        json.loads((tmp_path / "plain" / "summary.json").read_text())["best_val_test_acc"] is None
    )


def digits_learner(**protocol) -> Learner:
    settings = dict(iterations=2, initial_per_class=3, query=10, pool_subset=200, initial_epochs=8)
    settings.update(epochs=2, batch_size=10, lr=3e-3, reinit=False, eval_batch_size=500)
    settings.update(score_batch_size=200, **protocol)
    experiment = Experiment(
        data=DigitsSource().load(None, torch.device("cpu")),
        model_factory=cnn,
        acquisition=MaxEntropy(),
        protocol=tiny_protocol(**settings),
        seed=4,
    )
    return Learner(experiment, torch.device("cpu"), RunOptions(progress=False))


def test_validation_points_are_never_trained_on_or_acquired():
    learner = digits_learner(val_size=40)
    held_out = torch.nonzero(learner.state.labeled_at == VALIDATION).flatten()
    assert held_out.numel() == 40
    learner.train(0)
    for it in (1, 2):
        picks = learner.acquire(it)
        assert not set(picks.indices.tolist()) & set(held_out.tolist())
    assert learner.state.n_labeled == 30 + 2 * 10  # 3 per class, then two queries of 10
    assert (learner.state.labeled_at == VALIDATION).sum() == 40


def test_early_stopping_keeps_the_weights_of_the_best_validation_epoch(monkeypatch):
    learner = digits_learner(val_size=60, early_stopping=True)
    seen: list[float] = []
    states: list[dict] = []
    real = learner.validate

    def validate():
        if len(seen) == 5:  # wreck the weights after epoch 5: the later epochs validate worse
            with torch.no_grad():
                for p in learner.model.parameters():
                    p.add_(torch.randn_like(p) * 3)
        seen.append(real())
        states.append({k: v.clone() for k, v in learner.model.state_dict().items()})
        return seen[-1]

    monkeypatch.setattr(learner, "validate", validate)
    trained = learner.train(0)
    assert len(seen) == 8  # one validation per epoch
    best = max(range(8), key=lambda e: (seen[e], e))  # ties: the later epoch
    assert best < 5 <= 7 and seen[-1] < seen[best]
    assert trained["val_acc"] == seen[best] == real()
    kept = learner.model.state_dict()
    assert all(torch.equal(kept[k], states[best][k]) for k in kept)


def test_without_early_stopping_the_last_epoch_is_kept():
    learner = digits_learner(val_size=60)
    trained = learner.train(0)
    assert trained["val_acc"] == learner.validate()


def test_bad_validation_settings_are_one_line(compose_cfg, tmp_path):
    cfg = compose_cfg([*SMOKE, "protocol.early_stopping=true"])
    with pytest.raises(ConfigError, match="needs a validation set: set protocol.val_size"):
        run_from_config(cfg, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="val_size must be an integer >= 0"):
        check_settings(compose_cfg([*SMOKE, "protocol.val_size=-3"]))
    # synthetic: 200 training points, 8 start labeled, 2 x 4 acquired: at most 184 for validation
    cfg = compose_cfg([*SMOKE, "protocol.val_size=185"])
    with pytest.raises(ConfigError, match=r"val_size=185 does not fit.*val_size <= 184") as info:
        run_from_config(cfg, tmp_path / "b")
    assert "\n" not in str(info.value) and not (tmp_path / "b" / "metrics.csv").exists()


COMMITTED = [
    "results/fashion_budget/fashion/coreset-none/seed3",
    "results/fashion_budget/fashion/badge-none/seed3",
    "results/fashion_budget_random_xeon/fashion/random-none/seed0",
]


@pytest.mark.parametrize("run", COMMITTED)
def test_committed_runs_made_before_these_keys_are_still_finished(run):
    """The same command today composes optimizer, scheduler, protocol.val_size... at their
    defaults: no difference, so the finished run is recognised and skipped, not refused."""
    folder = REPO / run
    old = OmegaConf.load(folder / ".hydra" / "config.yaml")
    cfg = compose(
        [
            f"dataset={old.dataset.name}",
            f"acquisition={old.acquisition.name}",
            f"augment={old.augment.name}",
            f"protocol={old.protocol.name}",
            f"seed={old.seed}",
            f"dataset.augment={str(old.dataset.augment).lower()}",
        ]
    )
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    now = OmegaConf.to_container(cfg, resolve=True)
    assert now["optimizer"]["name"] == "adam" and now["protocol"]["val_size"] == 0
    best = json.loads((folder / "summary.json").read_text())["best_acc"]
    assert check_existing(folder, now, lambda: default_config(now)) == best
    assert Path(folder / "metrics.csv").exists()


def test_the_table_shows_the_validation_selected_accuracy_only_where_runs_have_one(
    compose_cfg, tmp_path
):
    from ladarun.report.render import BEST_VAL, to_csv, to_markdown
    from ladarun.report.table import aggregate

    expected = []
    for seed in (0, 1):
        out = tmp_path / "val" / f"seed{seed}"
        run_from_config(compose_cfg([*SMOKE, "protocol.val_size=10", f"seed={seed}"]), out)
        expected.append(json.loads((out / "summary.json").read_text())["best_val_test_acc"])
    run_from_config(compose_cfg(SMOKE), tmp_path / "plain" / "seed0")
    with_val = aggregate(tmp_path / "val")
    mean, std = sum(expected) / 2, float(torch.tensor(expected).std())
    assert f"{mean:.2f} ± {std:.2f}" in to_markdown(with_val, tmp_path / "val")
    assert BEST_VAL in to_markdown(with_val, tmp_path / "val")
    assert to_csv(with_val)["best_val_test_acc_mean"].tolist() == pytest.approx([mean])
    plain = aggregate(tmp_path / "plain")
    assert BEST_VAL not in to_markdown(plain, tmp_path / "plain")
    assert "best_val_test_acc_mean" not in to_csv(plain)
