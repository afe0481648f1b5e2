"""The optimizer and scheduler groups: what they build, that the default is the paper's Adam to
the digit, that a schedule moves the learning rate within each iteration and starts again at the
next (also across a resume), and bad keys refused in one line before a run writes anything."""

from __future__ import annotations

import functools
import math

import pytest
import torch

import ladarun.loop as loop_module
from helpers import (
    SMOKE,
    Crash,
    crash_at_evaluation,
    read_csv,
    tiny_protocol,
    toy_run,
    without_timings,
)
from ladarun.config import check_settings
from ladarun.errors import ConfigError
from ladarun.models import cnn
from ladarun.runner import run_from_config
from ladarun.training import make_optimizer, make_scheduler


@pytest.mark.parametrize(
    "option, cls, expected",
    [
        ("adam", torch.optim.Adam, dict(betas=(0.9, 0.999), weight_decay=0.0, amsgrad=False)),
        ("sgd", torch.optim.SGD, dict(momentum=0.9, nesterov=True, weight_decay=5e-4)),
        ("adamw", torch.optim.AdamW, dict(weight_decay=0.01)),
    ],
)
def test_optimizer_options_build_their_class_at_protocol_lr(compose_cfg, option, cls, expected):
    parts = check_settings(compose_cfg([*SMOKE, f"optimizer={option}", "protocol.lr=0.02"]))
    optimizer = make_optimizer(cnn(1, 3), parts.protocol, parts.optimizer)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.02
    for key, value in expected.items():
        assert tuple(group[key]) == value if key == "betas" else group[key] == value


def test_the_default_is_torchs_adam_to_the_digit(compose_cfg, tmp_path):
    parts = check_settings(compose_cfg(SMOKE))
    assert parts.optimizer.func is torch.optim.Adam and parts.scheduler is None
    model = cnn(1, 3)
    ours = make_optimizer(model, parts.protocol, parts.optimizer).param_groups[0]
    torchs = torch.optim.Adam(model.parameters(), lr=parts.protocol.lr).param_groups[0]

    def settings(group):
        return {k: (tuple(v) if k == "betas" else v) for k, v in group.items() if k != "params"}

    assert settings(ours) == settings(torchs)
    # a whole run with the group's Adam equals one with no optimizer given (the paper's)
    toy_run(tmp_path / "a", optimizer=parts.optimizer)
    toy_run(tmp_path / "b")
    a, b = (without_timings(read_csv(tmp_path / d / "metrics.csv")) for d in "ab")
    assert a == b


def learning_rates(monkeypatch) -> list[float]:
    """The learning rate each training epoch of the loop starts with."""
    seen: list[float] = []
    real = loop_module.train_epoch

    def train_epoch(model, optimizer, *args, **kwargs):
        seen.append(optimizer.param_groups[0]["lr"])
        return real(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(loop_module, "train_epoch", train_epoch)
    return seen


def test_cosine_moves_the_learning_rate_and_starts_again_each_iteration(tmp_path, monkeypatch):
    cosine = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=None, eta_min=0.0)
    seen = learning_rates(monkeypatch)
    toy_run(tmp_path / "cos", scheduler=cosine, initial_epochs=4, epochs=2, iterations=2, lr=0.01)
    half = [0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]  # T_max = 4 epochs
    assert seen == pytest.approx(half + [0.01, 0.005] * 2)  # then T_max = 2, from 0.01 again
    seen.clear()
    toy_run(tmp_path / "flat", initial_epochs=4, epochs=2, iterations=2, lr=0.01)
    assert seen == [0.01] * 8
    cos, flat = (read_csv(tmp_path / d / "metrics.csv") for d in ("cos", "flat"))
    assert [r["train_loss"] for r in cos] != [r["train_loss"] for r in flat]


def test_step_decays_at_half_the_iterations_epochs():
    model = cnn(1, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    step = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=None, gamma=0.1)
    schedule = make_scheduler(optimizer, step, epochs=4)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([1.0, 1.0, 0.1, 0.1])
    make_scheduler(optimizer, step, epochs=3)  # the next iteration: back to the base rate
    assert optimizer.param_groups[0]["lr"] == 1.0
    assert make_scheduler(optimizer, None, epochs=3) is None


def test_a_resumed_run_with_a_schedule_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    sgd = functools.partial(torch.optim.SGD, momentum=0.9, nesterov=True)
    cosine = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=None)
    kw = dict(optimizer=sgd, scheduler=cosine, initial_epochs=3, epochs=2, lr=0.05)
    toy_run(tmp_path / "straight", **kw)
    with monkeypatch.context() as m:
        crash_at_evaluation(m, 3)  # after iteration 1's checkpoint
        with pytest.raises(Crash):
            toy_run(tmp_path / "resumed", **kw)
    toy_run(tmp_path / "resumed", **kw)
    a, b = (
        without_timings(read_csv(tmp_path / d / "metrics.csv")) for d in ("straight", "resumed")
    )
    assert a == b


@pytest.mark.parametrize(
    "override, match",
    [
        (
            "+optimizer.momentum=0.9",
            r"optimizer=adam \(torch.optim.adam.Adam\) takes no 'momentum'",
        ),
        ("+optimizer.lr=0.1", "set the learning rate with protocol.lr"),
        ("+scheduler.gamma=0.5", None),  # scheduler=none takes nothing: no target, nothing built
    ],
)
def test_a_key_the_optimizer_does_not_take_is_one_line(compose_cfg, tmp_path, override, match):
    cfg = compose_cfg([*SMOKE, override])
    if match is None:
        assert check_settings(cfg).scheduler is None
        return
    with pytest.raises(ConfigError, match=match) as info:
        run_from_config(cfg, tmp_path / "run")
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()
    cfg = compose_cfg([*SMOKE, "scheduler=cosine", "+scheduler.step_size=3"])
    with pytest.raises(ConfigError, match="scheduler=cosine .* takes no 'step_size'"):
        check_settings(cfg)


def test_reinit_rebuilds_the_configured_optimizer(tmp_path, monkeypatch):
    sgd = functools.partial(torch.optim.SGD, momentum=0.5)
    built = []
    real = loop_module.make_optimizer

    def make_optimizer(model, protocol, factory=None):
        built.append(real(model, protocol, factory))
        return built[-1]

    monkeypatch.setattr(loop_module, "make_optimizer", make_optimizer)
    toy_run(tmp_path, optimizer=sgd, reinit=True, iterations=2)
    assert len(built) == 3 and all(type(o) is torch.optim.SGD for o in built)
    assert tiny_protocol().val_size == 0 and not tiny_protocol().early_stopping  # the defaults
