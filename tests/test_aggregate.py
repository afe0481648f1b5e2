"""ladarun-table on hand-written runs: means, sample stds, final/area, Time ratios, bold,
ablations, sections, bad input."""

import functools
import math
import re

import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy.stats import ttest_ind

from helpers import REPO, group_options
from ladarun.report.runs import default_config
from ladarun.report.table import aggregate, main
from runs_factory import write_run

XEON = "Intel Xeon (AVX512)"
EPYC = "AMD EPYC 7B13 (AVX2)"


def md_rows(text: str) -> list[list[str]]:
    """The body rows of every Markdown table in ``text``, as lists of stripped cells."""
    out = []
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|:- "):
            out.append([c.strip() for c in line.strip().strip("|").split("|")])
    return out


def md_row(text: str, method: str) -> list[str]:
    (row,) = [r for r in md_rows(text) if len(r) > 1 and r[1] == method]
    return row


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    write_run = functools.partial(globals()["write_run"], cpu=XEON)  # Time ratios need one CPU
    # Protocol quick, Fashion. Iteration 0's iter_s (50 s) is the initial training: not in Time.
    for seed, top in enumerate((80.0, 82.0, 84.0)):
        write_run(root, acquisition="random", seed=seed, accs=(60, top, top - 5))
    for seed, top in enumerate((81.0, 82.0)):
        write_run(root, acquisition="bald", seed=seed, accs=(60, 70, top), iter_s=(50, 1.5, 1.5))
    write_run(root, acquisition="ent", seed=0, accs=(60, 85, 70), iter_s=(50, 2, 2))
    write_run(root, acquisition="ent", seed=1, accs=(60, 87, 70), iter_s=(50, 4, 4))
    write_run(root, acquisition="ent", augment="infomixup", accs=(60, 70, 88), aux_params=77063)
    # stopped after iteration 1
    write_run(root, acquisition="var", seed=0, accs=(60, 70), finished=False)
    (root / "quick/fashion/var-none/seed0/checkpoint.pt").write_bytes(b"x")
    failed = write_run(root, acquisition="ent", seed=2, accs=(60,), finished=False)
    (failed / "failed.json").write_text(
        '{"error": "ConfigError", "message": "protocol.query=500 is too large"}'
    )
    # Protocol paper: same dataset and row, another protocol.
    write_run(root, acquisition="random", protocol="paper", accs=(40, 50, 45))
    return root


def cells(root, **kw):
    df = aggregate(root, **kw).cells
    return df.set_index(["protocol", "dataset", "row"])


def test_means_sample_stds_ratios_and_bold(runs):
    df = cells(runs)
    random, bald, ent, entmix = (
        df.loc[("quick", "fashion", k)] for k in ("random", "bald", "ent", "ent_infomixup")
    )
    # ddof=1: sqrt(((-2)^2 + 0 + 2^2) / 2)
    assert (random.n, random.best_mean, random.best_std) == (
        3,
        82.0,
        2.0,
    )
    assert bald.best_mean == 81.5 and bald.best_std == pytest.approx(math.sqrt(0.5))
    assert ent.best_mean == 86.0 and ent.best_std == pytest.approx(math.sqrt(2))
    assert random.time_ratio == 1.0
    assert bald.time_ratio == pytest.approx(1.5)
    # mean of 2, 2, 4, 4 over mean of 1s; iteration 0 left out
    assert ent.time_ratio == pytest.approx(3.0)
    assert entmix.param == 77063 and ent.param == 0
    # Bold (two-sided Welch, Holm over the group's pairs) in Final and Area only. Final: Random's
    # 75/77/79 are below BALD's 81/82 at p = 0.046 (one pair, so Holm changes nothing): Random is
    # not bold. Area: Random's 71.67/73/74.33 and BALD's 70.33/70.67 are not told apart.
    # LADA_EntMix has one seed (no variance to test), so Max Entropy is never significantly worse.
    assert ttest_ind([75, 77, 79], [81, 82], equal_var=False).pvalue == pytest.approx(
        0.046, abs=5e-4
    )
    assert (random.bold_final, bald.bold_final, entmix.bold_final, ent.bold_final) == (
        False,
        True,
        True,
        True,
    )
    assert (random.bold_area, bald.bold_area) == (True, True)
    assert "bold_best" not in df  # Best selects on the test set: never bold
    var = df.loc[("quick", "fashion", "var")]
    assert (var.n, var.n_unfinished, var.bold_final) == (0, 1, False) and math.isnan(var.best_mean)
    assert ent.n_unfinished == 1  # the failed seed 2


def test_final_accuracy_and_area_come_from_metrics_csv(runs):
    # Random's runs: accs (60, top, top - 5) for top = 80, 82, 84; BALD's (60, 70, top) for top = 81, 82.
    for path in runs.rglob(
        "summary.json"
    ):  # a run written before summary.json had "area": nothing else to read
        path.write_text(path.read_text().replace('"final_acc"', '"old_final_acc"'))
    df = cells(runs)
    random, bald = df.loc[("quick", "fashion", "random")], df.loc[("quick", "fashion", "bald")]
    assert random.final_mean == 77.0 and random.final_std == 2.0
    # means 71.67, 73, 74.33
    assert random.area_mean == 73.0 and random.area_std == pytest.approx(4 / 3)
    assert bald.final_mean == 81.5 and bald.area_mean == pytest.approx((130 + 81.5) / 3)
    assert bald.area_std == pytest.approx(math.sqrt(0.5) / 3)


def test_acquisition_time_ratio_is_relative_to_random(tmp_path):
    for seed in (0, 1):
        write_run(
            tmp_path,
            acquisition="random",
            seed=seed,
            acquire_s=(0.0, 0.01, 0.03),
            iter_s=(50, 2, 2),
            cpu=XEON,
        )
        write_run(
            tmp_path,
            acquisition="ent",
            seed=seed,
            acquire_s=(0.0, 0.5, 0.3 + seed * 0.4),
            iter_s=(50, 3, 3),
            cpu=XEON,
        )
    df = cells(tmp_path)
    random, ent = df.loc[("quick", "fashion", "random")], df.loc[("quick", "fashion", "ent")]
    # iteration 0 left out
    assert random.acq_ratio == 1.0 and random.acquire_s == pytest.approx(0.02)
    assert ent.acquire_s == pytest.approx(0.5) and ent.acq_ratio == pytest.approx(25.0)
    assert ent.time_ratio == pytest.approx(1.5)  # the whole-iteration ratio is a separate column


def test_bold_rule_in_the_written_table(tmp_path):
    finals = {
        "random": [80, 82, 84, 81, 83],
        "bald": [70, 71, 72, 70.5, 71.5],  # far below Random: significant after Holm
        "ent": [79, 81, 83, 80, 82],
        "var": [80, 82, 84, 81, 83],
    }
    for seed in range(5):
        for acquisition, values in finals.items():
            write_run(tmp_path, acquisition=acquisition, seed=seed, accs=(50, values[seed]))
    for path in tmp_path.rglob("config.yaml"):
        path.write_text(path.read_text().replace("iterations: 2", "iterations: 1"))
    assert main([str(tmp_path)]) == 0
    md = (tmp_path / "table1.md").read_text()
    assert md_row(md, "Random")[:4] == [
        "Baselines",
        "Random",
        "**82.00 ± 1.58**",
        "**66.00 ± 0.79**",
    ]
    assert md_row(md, "BALD")[2] == "71.00 ± 0.79"
    # Max Entropy (81 ± 1.58) and Var Ratio (82 ± 1.58) are in different groups: each alone, not bold.
    assert md_row(md, "Max Entropy")[:3] == ["Entropy-based", "Max Entropy", "81.00 ± 1.58"]
    assert "two-sided Welch t-tests on the per-seed values between every pair of rows" in md
    assert "Holm-corrected over those pairs" in md and "4.70 %, 3.35 %, 4.10 %, 1.95 %" in md
    csv = pd.read_csv(tmp_path / "table1.csv").set_index("row")
    assert list(csv.loc[["random", "bald"], "bold_final"]) == [True, False]
    assert r"\textbf{82.00 $\pm$ 1.58}" in (tmp_path / "table1.tex").read_text()


def test_seed_count_mismatch_is_reported(runs, capsys):
    # Baselines: Random has 3 finished seeds, BALD 2.
    assert main([str(runs)]) == 0
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "Baselines" in x]
    assert "seed counts differ" in line and "Random n=3, BALD n=2" in line
    md = (runs / "table1.md").read_text()
    assert "## Notes" in md and "Random n=3, BALD n=2" in md
    (runs / "table1.md").unlink()
    assert main([str(runs), "--require-equal-seeds"]) == 2
    err = capsys.readouterr().err
    assert "error: seed counts differ" in err and "Random n=3, BALD n=2" in err
    assert not (runs / "table1.md").exists()  # no table written


def test_equal_seed_counts_are_not_reported(tmp_path, capsys):
    for seed in (0, 1):
        write_run(tmp_path, acquisition="random", seed=seed)
        write_run(tmp_path, acquisition="bald", seed=seed)
    write_run(tmp_path, acquisition="ent", seed=0)  # a group of its own: nothing to compare
    assert main([str(tmp_path), "--require-equal-seeds"]) == 0
    assert "seed counts differ" not in capsys.readouterr().err
    assert "seed counts differ" not in (tmp_path / "table1.md").read_text()


def test_protocols_are_never_averaged_together(runs):
    agg = aggregate(runs)
    df = agg.cells.set_index(["protocol", "dataset", "row"])
    assert df.loc[("quick", "fashion", "random"), "best_mean"] == 82.0
    paper = df.loc[("paper", "fashion", "random")]
    assert (paper.n, paper.best_mean) == (1, 50.0)
    # the hand-written runs have 2 iterations, where the presets have 100 and 30
    assert sorted(agg.sections.values()) == [
        "Protocol paper (iterations=2), model cnn",
        "Protocol quick (iterations=2), model cnn",
    ]
    assert any("Random on fashion has runs under 2 protocol settings" in n for n in agg.notes)


def test_a_changed_protocol_value_is_its_own_section(runs):
    write_run(runs, acquisition="random", seed=7, accs=(60, 99, 99), folder="other/seed7")
    cfg = runs / "other/seed7/.hydra/config.yaml"
    cfg.write_text(cfg.read_text().replace("epochs: 10", "epochs: 3"))
    agg = aggregate(runs)
    quick = agg.cells[agg.cells["protocol"] == "quick"]
    assert sorted(quick.loc[quick["row"] == "random", "best_mean"]) == [82.0, 99.0]
    # every value that differs from the quick preset (epochs: 10) is named, in the preset's order
    assert sorted(h for h in agg.sections.values() if "quick" in h) == [
        "Protocol quick (iterations=2), model cnn",
        "Protocol quick (iterations=2, epochs=3), model cnn",
    ]


def test_unfinished_failed_and_unusable_runs_are_listed(runs):
    write_run(runs, acquisition="random", seed=9, folder="copied_without_hydra", config=False)
    broken = write_run(runs, acquisition="var", seed=1)
    text = (broken / "metrics.csv").read_text()
    # cut mid-row
    (broken / "metrics.csv").write_text(text[: text.rstrip().rfind(",", 0, len(text) - 12)])
    agg = aggregate(runs)
    status = {str(r.path.relative_to(runs)): (r.status, r.problem) for r in agg.not_finished}
    assert status["quick/fashion/var-none/seed0"] == ("incomplete", None)
    assert status["quick/fashion/ent-none/seed2"] == ("failed", None)
    assert (
        status["copied_without_hydra"][0] == "unusable"
        and "no config" in status["copied_without_hydra"][1]
    )
    assert "truncated or corrupted at line 4" in status["quick/fashion/var-none/seed1"][1]
    # the copy is not counted
    assert agg.cells.set_index(["protocol", "row"]).loc[("quick", "random"), "n"] == 3


def test_duplicate_seed_is_counted_once(runs):
    # sorts after the original
    write_run(runs, acquisition="random", seed=0, accs=(60, 10, 10), folder="zz_copy/seed0")
    agg = aggregate(runs)
    assert agg.cells.set_index(["protocol", "row"]).loc[("quick", "random"), "best_mean"] == 82.0
    assert any("second run of seed 0" in (r.problem or "") for r in agg.not_finished)


def test_an_augment_setting_override_is_an_ablation_of_the_row_not_a_second_run(runs):
    # An ablation of the same row and seeds, e.g. `augment.tau_activation=softplus`, that does better
    # than every row of its group: it is listed apart and never bold.
    for seed in (0, 1, 2):
        write_run(
            runs,
            acquisition="ent",
            augment="infomixup",
            seed=seed,
            accs=(60, 70, 95 + seed),
            folder=f"ablation/seed{seed}",
            settings={"augment": {"tau_activation": "softplus"}},
        )
    # The default written out (a run whose config has every key) is the same setting as the run
    # whose config lacks the key: one row, two seeds.
    write_run(
        runs,
        acquisition="ent",
        augment="infomixup",
        seed=1,
        accs=(60, 70, 86),
        folder="explicit/seed1",
        settings={"augment": {"tau_activation": "sigmoid", "samples": 5}},
    )
    agg = aggregate(runs)
    assert not any(r.problem for r in agg.runs)
    entmix = agg.cells[
        (agg.cells["protocol"] == "quick") & (agg.cells["row"] == "ent_infomixup")
    ].set_index("label")
    assert dict(entmix["best_mean"]) == {
        "LADA_EntMix": 87.0,
        "LADA_EntMix [augment.tau_activation=softplus]": 96.0,
    }
    assert dict(entmix["n"]) == {
        "LADA_EntMix": 2,
        "LADA_EntMix [augment.tau_activation=softplus]": 3,
    }
    assert dict(entmix["is_variant"]) == {
        "LADA_EntMix": False,
        "LADA_EntMix [augment.tau_activation=softplus]": True,
    }
    ablation = entmix.loc["LADA_EntMix [augment.tau_activation=softplus]"]
    assert not (ablation.bold_final or ablation.bold_area)
    # the group's bold is decided without the ablation
    assert entmix.loc["LADA_EntMix", "bold_final"]

    assert main([str(runs)]) == 0
    md = (runs / "table1.md").read_text()
    quick = md[md.index("## Protocol quick") : md.index("## Unfinished")]
    main_table, ablations = quick.split(
        "#### Fashion: ablations (non-default settings; never bold)"
    )
    assert md_row(main_table, "LADA_EntMix")[:3] == ["", "LADA_EntMix", "**87.00 ± 1.41**"]
    assert "softplus" not in main_table
    label = "LADA_EntMix [augment.tau_activation=softplus]"
    assert md_row(ablations, label)[:4] == ["Entropy-based", label, "96.00 ± 1.00", "75.33 ± 0.33"]
    assert "**" not in ablations
    csv = pd.read_csv(runs / "table1.csv")
    ab = csv[csv["ablation"]]
    assert list(ab["label"]) == ["LADA_EntMix [augment.tau_activation=softplus]"]
    assert not ab[["bold_final", "bold_area"]].any(axis=None)
    assert (
        csv.index[csv["ablation"]][0]
        > csv.index[(csv["protocol"] == "quick") & ~csv["ablation"]].max()
    )
    tex = (runs / "table1.tex").read_text()
    assert "Fashion: ablations (non-default settings; never bold).}" in tex
    assert r"\label{tab:table1-quick-iterations-2-cnn-fashion-ablations}" in tex
    assert tex.index("ablations (non-default") < tex.index("tau\\_activation=softplus")


def test_settings_none_of_which_is_the_default_are_all_ablations(tmp_path):
    for tau in ("softplus", "relu"):
        write_run(
            tmp_path,
            acquisition="ent",
            augment="infomixup",
            folder=tau,
            settings={"augment": {"tau_activation": tau}},
        )
    agg = aggregate(tmp_path)
    assert sorted(agg.cells["label"]) == [
        "LADA_EntMix [augment.tau_activation=relu]",
        "LADA_EntMix [augment.tau_activation=softplus]",
    ]
    assert agg.cells["is_variant"].all()
    assert any("none of them the package default" in n for n in agg.notes)


def test_console_entry_writes_md_csv_tex_with_paper_values(runs, capsys):
    assert main([str(runs), "--paper"]) == 0
    md = (runs / "table1.md").read_text()
    assert "sample standard deviation (ddof=1)" in md
    header = "Group Method Final Area n Time Acq. time Param Best (test-selected) Paper Δ Paper Time Paper Param"
    heads = [r for r in md_rows(md) if r[:2] == ["Group", "Method"]]
    assert heads and all(" ".join(r) == header for r in heads)
    assert md_row(md.split("## Protocol quick")[1], "Random") == [
        "Baselines", "Random", "77.00 ± 2.00", "**73.00 ± 1.33**", "3", "1.00", "1.00", "-",
        "82.00 ± 2.00", "80.96 ± 0.62", "+1.04", "1.00", "-",
    ]  # fmt: skip
    assert md_row(md, "Max Entropy")[:9] == [
        "Entropy-based", "Max Entropy", "**70.00 ± 0.00**", "**72.00 ± 0.47**", "2 (+1)", "3.00",
        "1.00", "-", "86.00 ± 1.41",
    ]  # fmt: skip
    assert md_row(md, "LADA_EntMix")[:9] == [
        "", "LADA_EntMix", "**88.00 ± –**", "**72.67 ± –**", "1", "1.00", "1.00", "77.1K", "88.00 ± –",
    ]  # fmt: skip
    assert md.index("## Protocol paper") < md.index("## Protocol quick")
    assert "iteration 1 of 2" in md and "resumes from its checkpoint" in md
    assert "ConfigError: protocol.query=500 is too large" in md
    csv = pd.read_csv(runs / "table1.csv")
    row = csv[(csv["protocol"] == "quick") & (csv["row"] == "ent")].iloc[0]
    assert (row.best_acc_mean, row.final_acc_mean, row.n, row.paper_mean) == (86.0, 70.0, 2, 80.93)
    assert row.area_mean == pytest.approx(
        (60 + 85 + 70 + 60 + 87 + 70) / 6
    ) and row.acq_time_ratio == pytest.approx(1.0)
    assert row["diff"] == pytest.approx(86.0 - 80.93)
    tex = (runs / "table1.tex").read_text()
    assert r"\textbf{73.00 $\pm$ 1.33}" in tex and r"LADA$_{\mathrm{EntMix}}$" in tex
    assert (
        "Group & Method & Final & Area & $n$ & Time & Acq. & Param & Best (test-selected) & Paper"
        in tex
    )
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


def test_adamixup_region_is_reported_under_notes(tmp_path):
    """Ent w. AdaMixup's region columns say whether its policy collapsed to U(0, 1)."""
    collapsed, working = tmp_path / "collapsed", tmp_path / "working"
    for seed in (0, 1):
        write_run(
            collapsed,
            acquisition="ent",
            augment="adamixup",
            seed=seed,
            extra={"region_a": ["", 0.3, 1e-9], "region_delta": ["", 0.4, 1.0]},
        )
        write_run(
            working,
            acquisition="ent",
            augment="adamixup",
            seed=seed,
            extra={"region_a": ["", 0.3, 0.35], "region_delta": ["", 0.4, 0.3]},
        )
    note = [n for n in aggregate(collapsed).notes if "mixing region" in n]
    assert len(note) == 1 and "in 50% of iterations" in note[0] and "Δ = 1" in note[0]
    assert "collapsed" not in note[0]  # half of the iterations is not a collapse
    write_run(
        collapsed,
        acquisition="ent",
        augment="adamixup",
        seed=2,
        extra={"region_a": ["", 1e-9, 1e-9], "region_delta": ["", 1.0, 1.0]},
    )
    assert any(
        "67% of iterations" in n and "the policy collapsed" in n for n in aggregate(collapsed).notes
    )
    note = [n for n in aggregate(working).notes if "mixing region" in n]
    assert len(note) == 1 and "in 0% of iterations" in note[0] and "collapsed" not in note[0]
    write_run(tmp_path / "plain", acquisition="ent")
    assert not [n for n in aggregate(tmp_path / "plain").notes if "mixing region" in n]


# --- choosing rows, LaTeX labels, section headings ---------------------------------------


def test_rows_and_exclude_choose_the_rows_shown(runs, tmp_path, capsys):
    out = tmp_path / "only"
    assert main([str(runs), "--rows", "ent,ent_infomixup", "--out", str(out)]) == 0
    table = pd.read_csv(out / "table1.csv")
    assert sorted(table["row"]) == ["ent", "ent_infomixup"]  # the paper section had Random only
    # Time stays relative to Random, which is not shown
    assert table.set_index("row").loc["ent", "time_ratio"] == pytest.approx(3.0)
    md = (out / "table1.md").read_text()
    assert "| Random |" not in md and "| Var Ratio |" not in md  # nor its unfinished run
    # a chosen row's failed run is listed
    assert ["failed", "Fashion", "Max Entropy", "2"] in [r[1:5] for r in md_rows(md)]
    capsys.readouterr()
    assert main([str(runs), "--exclude", "random,var", "--out", str(out)]) == 0
    assert sorted(pd.read_csv(out / "table1.csv")["row"]) == ["bald", "ent", "ent_infomixup"]


def test_an_unknown_row_key_is_one_line_listing_the_valid_ones(runs, capsys):
    assert main([str(runs), "--rows", "ent,entropy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        "ladarun-table: error: unknown row 'entropy' in --rows; valid rows: random, "
    )
    assert "ent_infomixup" in err[0] and "var_infomixup_fixed" in err[0]
    assert main([str(runs), "--exclude", "lada"]) == 2
    assert "unknown row 'lada' in --exclude" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse's own error for an empty list
        main([str(runs), "--rows", ","])
    assert stop.value.code == 2 and "give row keys" in capsys.readouterr().err
    assert not (runs / "table1.md").exists()


def test_every_latex_table_has_a_label(runs, tmp_path):
    assert main([str(runs), "--out", str(tmp_path / "a")]) == 0
    tex = (tmp_path / "a" / "table1.tex").read_text()
    assert re.findall(r"\\label\{([^}]*)\}", tex) == [
        "tab:table1-paper-iterations-2-cnn-fashion",
        "tab:table1-quick-iterations-2-cnn-fashion",
    ]
    assert tex.count(r"\begin{table}") == 2
    assert main([str(runs), "--out", str(tmp_path / "b"), "--label", "tab:al"]) == 0
    assert (
        r"\label{tab:al-quick-iterations-2-cnn-fashion}"
        in (tmp_path / "b" / "table1.tex").read_text()
    )


def test_headings_name_every_protocol_value_that_differs_from_the_preset(tmp_path):
    preset = default_config({"protocol": {"name": "quick"}})["protocol"]
    assert preset["iterations"] == 30
    for n, protocol in ((30, preset), (10, {**preset, "iterations": 10, "lr": 0.01})):
        accs, iter_s = [50.0] * (n + 1), [1.0] * (n + 1)
        write_run(
            tmp_path,
            acquisition="random",
            accs=accs,
            iter_s=iter_s,
            settings={"protocol": protocol},
            folder=f"iterations{n}",
        )
    assert sorted(aggregate(tmp_path).sections.values()) == [
        "Protocol quick (iterations=10, lr=0.01), model cnn",
        "Protocol quick, model cnn",  # the preset exactly
    ]


@pytest.mark.parametrize("protocol", group_options("protocol"))
def test_the_package_defaults_of_a_protocol_are_what_hydra_composes(compose_cfg, protocol):
    # paper_budget loads quick in its defaults list: its defaults are quick's with its own values over
    composed = OmegaConf.to_container(compose_cfg([f"protocol={protocol}"]), resolve=False)
    defaults = default_config({"protocol": {"name": protocol}, "model": composed["model"]})
    for key in ("protocol", "model", "aux"):
        assert defaults[key] == composed[key], key


def test_a_protocol_outside_the_package_is_headed_by_what_differs(tmp_path):
    for seed, epochs in ((0, 10), (1, 3)):
        write_run(
            tmp_path,
            acquisition="random",
            seed=seed,
            settings={"protocol": {"name": "mine", "epochs": epochs}},
        )
    assert sorted(aggregate(tmp_path).sections.values()) == [
        "Protocol mine (epochs=10), model cnn",
        "Protocol mine (epochs=3), model cnn",
    ]


def test_a_protocol_whose_runs_came_from_two_cpus_says_so(tmp_path):
    # one config gives another run on another CPU's kernels (docs/methods.md §14)
    write_run(tmp_path / "mixed", acquisition="random", cpu="AMD EPYC 7B13 (AVX2)")
    write_run(tmp_path / "mixed", acquisition="ent", cpu="Intel Xeon (AVX512)")
    notes = [n for n in aggregate(tmp_path / "mixed").notes if "mixes CPUs" in n]
    assert len(notes) == 1 and "AMD EPYC 7B13 (AVX2); Intel Xeon (AVX512)" in notes[0]
    write_run(tmp_path / "one", acquisition="random", cpu="Intel Xeon (AVX512)")
    write_run(tmp_path / "one", acquisition="ent", cpu="Intel Xeon (AVX512)")
    write_run(tmp_path / "one", acquisition="var")  # an older run, without the record
    assert not [n for n in aggregate(tmp_path / "one").notes if "mixes CPUs" in n]


# --- Time ratios only within one CPU model ---------------------------------------------------


def test_a_mixed_cpu_folder_shows_no_cross_cpu_ratio(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, acquisition="random", seed=seed, iter_s=(50, 2, 2), cpu=EPYC)
        write_run(tmp_path, acquisition="ent", seed=seed, iter_s=(50, 3, 3), cpu=XEON)
        write_run(tmp_path, acquisition="bald", seed=seed, iter_s=(50, 4, 4), cpu=EPYC)
        write_run(tmp_path, acquisition="var", seed=seed, iter_s=(50, 5, 5))  # predates the field
    write_run(tmp_path, acquisition="badge", seed=0, iter_s=(50, 6, 6), cpu=EPYC)
    write_run(tmp_path, acquisition="badge", seed=1, iter_s=(50, 6, 6), cpu=XEON)
    agg = aggregate(tmp_path)
    df = agg.cells.set_index("row")
    assert df.loc["random", "time_ratio"] == 1.0
    assert df.loc["bald", "time_ratio"] == pytest.approx(2.0)  # both on the EPYC
    for row in ("ent", "var", "badge"):  # another CPU, an unknown one, two of them
        assert math.isnan(df.loc[row, "time_ratio"]) and math.isnan(df.loc[row, "acq_ratio"])
    (note,) = [n for n in agg.notes if "no Time or Acq. time ratio" in n]
    assert "Random has no finished run on its CPU here: Max Entropy" in note
    assert "not recorded for some of its runs" in note and "Var Ratio" in note
    assert "more than one CPU model: BADGE" in note
    assert main([str(tmp_path)]) == 0
    md = (tmp_path / "table1.md").read_text()
    assert md_row(md, "Max Entropy")[5:7] == ["", ""] and md_row(md, "BALD")[5] == "2.00"


def test_a_same_cpu_rerun_of_random_times_the_rows_of_that_cpu(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, acquisition="random", seed=seed, iter_s=(50, 2, 2), cpu=EPYC)
        write_run(tmp_path, acquisition="ent", seed=seed, iter_s=(50, 3, 3), cpu=XEON)
        # Random's seeds rerun on the Xeon, in a folder of their own: counted once for accuracy
        write_run(
            tmp_path, acquisition="random", seed=seed, iter_s=(50, 1.5, 1.5), cpu=XEON,
            accs=(0, 0, 0), folder=f"zz_random_xeon/seed{seed}",
        )  # fmt: skip
    agg = aggregate(tmp_path)
    df = agg.cells.set_index("row")
    assert df.loc["random", "final_mean"] == 80.0  # the reruns are not averaged in
    assert df.loc["ent", "time_ratio"] == pytest.approx(2.0)  # 3 s over the Xeon Random's 1.5 s
    assert sum("second run of seed" in (r.problem or "") for r in agg.runs) == 2


# --- one bad run is named and left out; the rest is reported ---------------------------------


@pytest.mark.parametrize("content", ["{}", "[]", '"done"', "{not json", '{"best_acc": "high"}'])
def test_a_summary_of_the_wrong_shape_is_one_unusable_run(tmp_path, capsys, content):
    write_run(tmp_path, acquisition="random", seed=0)
    bad = write_run(tmp_path, acquisition="random", seed=1)
    (bad / "summary.json").write_text(content)
    agg = aggregate(tmp_path)
    assert agg.cells.set_index("row").loc["random", "n"] == 1
    (run,) = agg.not_finished
    assert run.path == bad and "summary.json" in run.problem and "delete" in run.problem
    assert main([str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"unusable: {bad}: summary.json" in err


def test_a_run_whose_loss_diverged_is_named_as_such_not_as_a_damaged_file(tmp_path):
    run = write_run(tmp_path, acquisition="random")
    text = (run / "metrics.csv").read_text().splitlines()
    cells = text[2].split(",")
    cells[4] = "nan"  # train_loss of iteration 1, as a run with protocol.lr=1e6 writes it
    (run / "metrics.csv").write_text("\n".join([text[0], text[1], ",".join(cells), text[3]]) + "\n")
    (problem,) = [r.problem for r in aggregate(tmp_path).not_finished]
    assert "not finite from iteration 1" in problem and "protocol.lr" in problem
    assert "corrupted" not in problem


def test_out_pointing_at_a_file_is_one_line_and_writes_nothing(tmp_path, capsys):
    write_run(tmp_path / "runs", acquisition="random")
    (tmp_path / "taken").write_text("x")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is a file; give a folder" in err
    assert (tmp_path / "taken").read_text() == "x"
    assert main([str(tmp_path / "taken")]) == 2
    assert "is a file; pass the folder that holds the runs" in capsys.readouterr().err


def test_a_group_outside_the_papers_is_tabled_bolded_and_drawn(tmp_path, monkeypatch):
    """Rows of a new group (issue 33's "Beyond the paper") need no change to the report code."""
    from ladarun.report import cells, figures
    from ladarun.report import rows as rows_module

    paper = rows_module.rows()
    extra = rows_module.Row("margin", "Beyond the paper", "Margin", "margin", "none", {}, None, "")
    extra_fixed = rows_module.Row(
        "margin_infomixup_fixed", "Beyond the paper", "LADA_MarginMix^fixed", "margin",
        "infomixup_fixed", {}, None, "",
    )  # fmt: skip
    monkeypatch.setattr(rows_module, "rows", lambda: (*paper, extra, extra_fixed))
    monkeypatch.setattr(cells, "rows", lambda: (*paper, extra, extra_fixed))
    for seed in (0, 1):
        for acquisition, augment, final in (
            ("random", "none", 70), ("margin", "none", 60), ("margin", "infomixup_fixed", 80)
        ):  # fmt: skip
            accs = (50, 60, final + seed)
            write_run(tmp_path, acquisition=acquisition, augment=augment, seed=seed, accs=accs)
    agg = aggregate(tmp_path)
    df = agg.cells.set_index("row")
    assert list(agg.cells["group"]) == ["Baselines", "Beyond the paper", "Beyond the paper"]
    assert (df.loc["margin", "bold_final"], df.loc["margin_infomixup_fixed", "bold_final"]) == (
        False,
        True,
    )
    assert main([str(tmp_path)]) == 0
    assert md_row((tmp_path / "table1.md").read_text(), "Margin")[0] == "Beyond the paper"
    fig = figures.accuracy_figure(agg.table, "t")
    assert [ax.get_title() for ax in fig.axes] == ["Beyond the paper"]  # Random: the reference


def test_a_run_from_before_a_protocol_key_shares_its_section_with_newer_runs(tmp_path):
    """A committed run's config has no protocol.val_size (added in 0.4.0); a newer run of the same
    setting records val_size=0 and early_stopping=false. One section, one row of both seeds."""
    import shutil

    import yaml

    committed = REPO / "results" / "fashion_budget" / "fashion" / "random-none"
    row = tmp_path / "fashion" / "random-none"
    for seed in (0, 1):
        shutil.copytree(committed / f"seed{seed}", row / f"seed{seed}")
    newer = row / "seed1" / ".hydra" / "config.yaml"
    config = yaml.safe_load(newer.read_text())
    assert "val_size" not in config["protocol"]
    config["protocol"].update(val_size=0, early_stopping=False)
    newer.write_text(yaml.safe_dump(config))
    agg = aggregate(tmp_path)
    assert len(agg.sections) == 1 and list(agg.sections.values()) == [
        "Protocol paper_budget, model cnn"
    ]
    assert agg.cells["n"].tolist() == [2]
