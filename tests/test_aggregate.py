"""ladarun-table on hand-written runs: means, sample stds, Time ratios, bold, sections, bad input."""
import math

import pandas as pd
import pytest

from ladarun.aggregate import aggregate, main
from runs_factory import write_run


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    # Protocol quick, Fashion. Iteration 0's iter_s (50 s) is the initial training: not in Time.
    for seed, top in enumerate((80.0, 82.0, 84.0)):
        write_run(root, acquisition="random", seed=seed, accs=(60, top, top - 5))
    for seed, top in enumerate((81.0, 82.0)):
        write_run(root, acquisition="bald", seed=seed, accs=(60, 70, top), iter_s=(50, 1.5, 1.5))
    write_run(root, acquisition="ent", seed=0, accs=(60, 85, 70), iter_s=(50, 2, 2))
    write_run(root, acquisition="ent", seed=1, accs=(60, 87, 70), iter_s=(50, 4, 4))
    write_run(root, acquisition="ent", augment="infomixup", accs=(60, 70, 88), aux_params=77063)
    write_run(root, acquisition="var", seed=0, accs=(60, 70), finished=False)  # stopped after iteration 1
    (root / "quick/fashion/var-none/seed0/checkpoint.pt").write_bytes(b"x")
    failed = write_run(root, acquisition="ent", seed=2, accs=(60,), finished=False)
    (failed / "failed.json").write_text('{"error": "ConfigError", "message": "protocol.query=500 is too large"}')
    # Protocol paper: same dataset and row, another protocol.
    write_run(root, acquisition="random", protocol="paper", accs=(40, 50, 45))
    return root


def cells(root, **kw):
    df = aggregate(root, **kw).cells
    return df.set_index(["protocol", "dataset", "row"])


def test_means_sample_stds_ratios_and_bold(runs):
    df = cells(runs)
    random, bald, ent, entmix = (df.loc[("quick", "fashion", k)] for k in ("random", "bald", "ent", "ent_infomixup"))
    assert (random.n, random["mean"], random["std"]) == (3, 82.0, 2.0)  # ddof=1: sqrt(((-2)^2 + 0 + 2^2) / 2)
    assert bald["mean"] == 81.5 and bald["std"] == pytest.approx(math.sqrt(0.5))
    assert ent["mean"] == 86.0 and ent["std"] == pytest.approx(math.sqrt(2))
    assert random.time_ratio == 1.0
    assert bald.time_ratio == pytest.approx(1.5)
    assert ent.time_ratio == pytest.approx(3.0)  # mean of 2, 2, 4, 4 over mean of 1s; iteration 0 left out
    assert entmix.param == 77063 and ent.param == 0
    # Bold: best of each group with two or more rows; Var Ratio has no finished run.
    assert (random.bold, bald.bold, entmix.bold, ent.bold) == (True, False, True, False)
    var = df.loc[("quick", "fashion", "var")]
    assert (var.n, var.n_unfinished, var.bold) == (0, 1, False) and math.isnan(var["mean"])
    assert ent.n_unfinished == 1  # the failed seed 2


def test_protocols_are_never_averaged_together(runs):
    agg = aggregate(runs)
    df = agg.cells.set_index(["protocol", "dataset", "row"])
    assert df.loc[("quick", "fashion", "random"), "mean"] == 82.0
    paper = df.loc[("paper", "fashion", "random")]
    assert (paper.n, paper["mean"]) == (1, 50.0)
    assert sorted(agg.sections.values()) == ["Protocol paper, model cnn", "Protocol quick, model cnn"]
    assert any("Random on fashion has runs under 2 protocol settings" in n for n in agg.notes)


def test_a_changed_protocol_value_is_its_own_section(runs):
    write_run(runs, acquisition="random", seed=7, accs=(60, 99, 99), folder="other/seed7")
    cfg = runs / "other/seed7/.hydra/config.yaml"
    cfg.write_text(cfg.read_text().replace("epochs: 10", "epochs: 3"))
    agg = aggregate(runs)
    quick = agg.cells[agg.cells["protocol"] == "quick"]
    assert sorted(quick.loc[quick["row"] == "random", "mean"]) == [82.0, 99.0]
    assert sorted(h for h in agg.sections.values() if "quick" in h) == [
        "Protocol quick, model cnn (protocol.epochs=10)", "Protocol quick, model cnn (protocol.epochs=3)",
    ]


def test_unfinished_failed_and_unusable_runs_are_listed(runs):
    write_run(runs, acquisition="random", seed=9, folder="copied_without_hydra", config=False)
    broken = write_run(runs, acquisition="var", seed=1)
    text = (broken / "metrics.csv").read_text()
    (broken / "metrics.csv").write_text(text[: text.rstrip().rfind(",", 0, len(text) - 12)])  # cut mid-row
    agg = aggregate(runs)
    status = {str(r.path.relative_to(runs)): (r.status, r.problem) for r in agg.not_finished}
    assert status["quick/fashion/var-none/seed0"] == ("incomplete", None)
    assert status["quick/fashion/ent-none/seed2"] == ("failed", None)
    assert status["copied_without_hydra"][0] == "unusable" and "no config" in status["copied_without_hydra"][1]
    assert "truncated or corrupted at line 4" in status["quick/fashion/var-none/seed1"][1]
    assert agg.cells.set_index(["protocol", "row"]).loc[("quick", "random"), "n"] == 3  # the copy is not counted


def test_duplicate_seed_is_counted_once(runs):
    write_run(runs, acquisition="random", seed=0, accs=(60, 10, 10), folder="zz_copy/seed0")  # sorts after the original
    agg = aggregate(runs)
    assert agg.cells.set_index(["protocol", "row"]).loc[("quick", "random"), "mean"] == 82.0
    assert any("second run of seed 0" in (r.problem or "") for r in agg.not_finished)


def test_an_augment_setting_override_is_a_variant_of_the_row_not_a_second_run(runs):
    # An ablation of the same row and seeds, e.g. `augment.tau_activation=softplus`.
    write_run(runs, acquisition="ent", augment="infomixup", accs=(60, 70, 90), folder="ablation/seed0")
    cfg = runs / "ablation/seed0/.hydra/config.yaml"
    cfg.write_text(cfg.read_text().replace("name: infomixup", "name: infomixup\n  tau_activation: softplus"))
    agg = aggregate(runs)
    assert not any(r.problem for r in agg.runs)
    entmix = agg.cells[(agg.cells["protocol"] == "quick") & (agg.cells["row"] == "ent_infomixup")].set_index("label")
    assert dict(entmix["mean"]) == {
        "LADA_EntMix [augment.tau_activation=None]": 88.0, "LADA_EntMix [augment.tau_activation=softplus]": 90.0,
    }
    assert entmix["is_variant"].all()


def test_console_entry_writes_md_csv_tex_with_paper_values(runs, capsys):
    assert main([str(runs), "--paper"]) == 0
    md = (runs / "table1.md").read_text()
    assert "sample standard deviation (ddof=1)" in md
    assert "| Baselines | Random | **82.00 ± 2.00** | 3 | 1.00 | - | 80.96 ± 0.62 | +1.04 | 1.00 | - |" in md
    assert "| Entropy-based | Max Entropy | 86.00 ± 1.41 | 2 (+1) | 3.00 |" in md
    assert "|  | LADA_EntMix | **88.00 ± –** | 1 | 1.00 | 77.1K |" in md and "77.1K" in md
    assert md.index("## Protocol paper") < md.index("## Protocol quick")
    assert "iteration 1 of 2" in md and "resumes from its checkpoint" in md
    assert "ConfigError: protocol.query=500 is too large" in md
    csv = pd.read_csv(runs / "table1.csv")
    row = csv[(csv["protocol"] == "quick") & (csv["row"] == "ent")].iloc[0]
    assert (row.best_acc_mean, row.n, row.paper_mean) == (86.0, 2, 80.93)
    assert row["diff"] == pytest.approx(86.0 - 80.93)
    tex = (runs / "table1.tex").read_text()
    assert r"\textbf{82.00 $\pm$ 2.00}" in tex and r"LADA$_{\mathrm{EntMix}}$" in tex
    err = capsys.readouterr().err
    assert "incomplete: " in err and "failed: " in err


def test_empty_or_missing_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no runs under" in err and "hydra.sweep.dir" in err
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_corrupted_metrics_file(tmp_path):
    run = write_run(tmp_path, acquisition="ent")
    (run / "metrics.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe garbage")
    (problem,) = [r.problem for r in aggregate(tmp_path).not_finished]
    assert "metrics.csv" in problem and "delete" in problem
