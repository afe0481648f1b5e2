"""Table 1's augmentation baselines as whole runs: Ent w. AdaMixup, LADA_EntSTN(^fixed), BGADL."""

import json

import pytest

from helpers import CPU, crash_at_evaluation, read_csv, tiny_protocol, toy_data, without_timings
from ladarun.acquisition import MaxEntropy
from ladarun.augment import BGADL, AdaMixup, FixedInfoSTN, InfoSTN
from ladarun.loop import Experiment, RunOptions, run_active_learning
from ladarun.models import cnn
from ladarun.runner import run_from_config

# Until BALD lands, BGADL runs with Max Entropy (its Table 1 row is acquisition=bald augment=bgadl).
ROWS = {
    "adamixup": lambda: AdaMixup(),
    "infostn": lambda: InfoSTN(epochs=2, batch_size=10),
    "infostn_fixed": lambda: FixedInfoSTN(epochs=2, batch_size=10),
    "bgadl": lambda: BGADL(gan_epochs=2),
}
COLUMNS = {
    "adamixup": AdaMixup.metric_names,
    "infostn": InfoSTN.metric_names,
    "infostn_fixed": FixedInfoSTN.metric_names,
    "bgadl": BGADL.metric_names,
}


def run(out_dir, row, seed=0, **kw):
    return run_active_learning(
        Experiment(
            data=toy_data(),
            model_factory=cnn,
            acquisition=MaxEntropy(),
            protocol=tiny_protocol(query=4, pool_subset=20),
            seed=seed,
            augment=ROWS[row](),
        ),
        out_dir,
        CPU,
        RunOptions(progress=False, **kw),
    )


@pytest.mark.parametrize("row", sorted(ROWS))
def test_smoke_run_of_each_row_writes_its_csv(tmp_path, row):
    run(tmp_path, row)
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["n_labeled"]) for r in rows] == [6, 10, 14, 18]
    # the initial training has no augmentation
    assert all(r[c] == "" for c in COLUMNS[row] for r in rows[:1])
    assert all(r[c] != "" for c in COLUMNS[row] for r in rows[1:])
    if row == "bgadl":
        assert [int(r["n_synthetic"]) for r in rows[1:]] == [4, 8, 12]
        assert float(rows[3]["train_loss"]) > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["aux_params"] > 0


@pytest.mark.parametrize("augment", sorted(ROWS))
def test_each_row_runs_from_the_cli_config(compose_cfg, tmp_path, augment):
    acquisition = "ent"  # BGADL's own row uses bald
    cfg = compose_cfg(
        [
            "dataset=synthetic",
            "protocol=smoke",
            "progress=false",
            f"acquisition={acquisition}",
            f"augment={augment}",
        ]
    )
    assert cfg.augment.name == augment
    run_from_config(cfg, tmp_path)
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["n_labeled"]) for r in rows] == [8, 12, 16]
    assert list(rows[0])[-len(COLUMNS[augment]) :] == list(COLUMNS[augment])
    assert all(r[c] != "" for c in COLUMNS[augment] for r in rows[1:])


@pytest.mark.parametrize("row", ["bgadl", "adamixup"])
def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch, row):
    """E/G/D, their optimisers and the synthetic set (BGADL), pi and phi (AdaMixup) are in the checkpoint."""
    run(tmp_path / "straight", row, seed=1)
    with monkeypatch.context() as m:
        # iteration 2 trains, then dies before its row and checkpoint
        crash_at_evaluation(m, 3, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path / "resumed", row, seed=1)
    assert len(read_csv(tmp_path / "resumed" / "metrics.csv")) == 2
    run(tmp_path / "resumed", row, seed=1)
    straight, resumed = (
        read_csv(tmp_path / "straight" / "metrics.csv"),
        read_csv(tmp_path / "resumed" / "metrics.csv"),
    )
    assert without_timings(resumed) == without_timings(straight)
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["resumed_at"] == [2]
