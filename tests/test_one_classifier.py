"""Every Table 1 row of a protocol trains the same classifier (issue: a fair Table 1).

Before this, ``acquisition=bald`` switched on head dropout for its own rows only, so BALD and
BGADL started from another classifier than every other row: with the same seed and initial
labeled set their iteration-0 accuracy differed from Random's.
"""

import pytest

import ladarun.loop as loop_module
from helpers import group_options, read_csv
from ladarun.report.rows import rows as table1_rows
from ladarun.runner import run_from_config

METHODS = [row.key for row in table1_rows()]


class _StopAfterInitialTraining(Exception):
    pass


def _stop(*args, **kwargs):
    raise _StopAfterInitialTraining


@pytest.mark.parametrize("protocol", group_options("protocol"))
def test_every_row_of_a_protocol_has_the_same_model_config(compose_cfg, protocol):
    models = {m: compose_cfg([f"protocol={protocol}", f"method={m}"]).model for m in METHODS}
    first = next(iter(models.values()))
    assert first.dropout > 0  # BALD's MC dropout needs it, so every row has it
    assert all(model == first for model in models.values()), {
        m: dict(v) for m, v in models.items() if v != first
    }


def test_all_rows_reach_the_same_iteration_0_accuracy(compose_cfg, tmp_path, monkeypatch):
    """Same seed, same initial labeled set, same classifier: the same accuracy before any acquisition."""
    monkeypatch.setattr(loop_module, "acquire_step", _stop)
    accuracy = {}
    for method in METHODS:
        cfg = compose_cfg(
            ["dataset=synthetic", "protocol=smoke", "progress=false", "seed=3", f"method={method}"]
        )
        out = tmp_path / method
        with pytest.raises(_StopAfterInitialTraining):
            run_from_config(cfg, out)
        rows = read_csv(out / "metrics.csv")
        assert rows[0]["iteration"] == "0"
        accuracy[method] = (rows[0]["test_acc"], rows[0]["train_loss"])
    assert len(accuracy) == len(METHODS) == 24  # the paper's 18 rows and the 6 beyond it
    assert len(set(accuracy.values())) == 1, accuracy
