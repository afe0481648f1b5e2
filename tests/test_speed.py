"""The speed switches run every path and change results only within their precision."""

import pytest
import torch

from helpers import CPU, read_csv, toy_data, toy_run
from ladarun.augment import InfoMixup
from ladarun.errors import ConfigError
from ladarun.loop import RunOptions
from ladarun.models import cnn
from ladarun.runtime import SpeedOptions


def run(out, speed, augment=None):
    options = RunOptions(progress=False, speed=speed)
    toy_run(out, None, augment, options=options, query=4, pool_subset=20)
    return read_csv(out / "metrics.csv")


def test_channels_last_keeps_the_results(tmp_path):
    plain = run(tmp_path / "plain", SpeedOptions())
    nhwc = run(tmp_path / "nhwc", SpeedOptions(channels_last=True))
    for a, b in zip(plain, nhwc):  # same algorithm, other memory layout: equal up to float rounding
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-3)


def test_bf16_autocast_runs_the_look_ahead_and_training(tmp_path):
    rows = run(tmp_path, SpeedOptions(autocast="bf16"), InfoMixup(policy_epochs=1))
    assert len(rows) == 4 and all(r["virtual_score"] != "" for r in rows[1:])
    assert all(float(r["train_loss"]) == float(r["train_loss"]) for r in rows)  # finite, not NaN


def test_bf16_autocast_trains_on_the_current_weights():
    # One autocast block spans a whole iteration of optimizer steps; the forward passes must
    # see each step's updated weights, not a cached bf16 copy of the first ones.
    torch.manual_seed(0)
    data = toy_data()
    model = cnn(1, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data.x_train[:30], data.y_train[:30]
    with SpeedOptions(autocast="bf16").autocast_on(CPU):
        first = torch.nn.functional.cross_entropy(model(x), y).item()
        for _ in range(30):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        last = torch.nn.functional.cross_entropy(model(x), y).item()
    assert last < 0.2 * first, (first, last)


def test_compile_keeps_plain_state_dict_keys():
    model = SpeedOptions(compile=True).prepare_model(cnn(1, 3))
    assert all("_orig_mod" not in key for key in model.state_dict())


@pytest.mark.slow
def test_compiled_run_matches_eager(tmp_path):
    eager = run(tmp_path / "eager", SpeedOptions())
    compiled = run(tmp_path / "compiled", SpeedOptions(compile=True))
    for a, b in zip(eager, compiled):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-3)


def test_unknown_autocast_is_a_config_error():
    with pytest.raises(ConfigError, match="speed.autocast"):
        SpeedOptions(autocast="fp8")
