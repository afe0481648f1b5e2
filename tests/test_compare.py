"""ladarun-compare: differences with confidence intervals, Welch tests Holm-corrected within a
stated family, the preset's primary family, and learning-curve crossings."""

import math

import pandas as pd
import pytest
from scipy.stats import ttest_ind

from ladarun.report.compare import compare, crossings, default_pairs, main, markdown
from ladarun.report.stats import holm
from ladarun.report.table import AggregateError
from runs_factory import write_run

# Per seed: (iteration 0, 1, 2) test accuracies. LADA_EntMix starts level with Random, falls behind
# at 30 labels and ends ahead; Max Entropy is behind throughout.
CURVES = {
    ("random", "none"): [(50, 62, 70), (52, 60, 72), (51, 61, 71)],
    ("ent", "none"): [(50, 55, 60), (52, 54, 61), (51, 56, 62)],
    ("ent", "infomixup"): [(50, 58, 75), (52, 57, 77), (51, 59, 76)],
}


@pytest.fixture
def runs(tmp_path):
    for (acquisition, augment), seeds in CURVES.items():
        for seed, accs in enumerate(seeds):
            write_run(tmp_path, acquisition=acquisition, augment=augment, seed=seed, accs=accs)
    return tmp_path


def test_crossings_are_the_label_counts_where_the_lead_changes():
    a = pd.Series([50.0, 58.0, 75.0, 74.0], index=[20, 30, 40, 50])
    b = pd.Series([50.0, 61.0, 71.0, 75.0], index=[20, 30, 40, 50])
    # tied at 20 (no sign yet), behind at 30, ahead at 40, behind at 50
    assert crossings(a, b) == ([40, 50], 0.25)
    assert crossings(a + 100, b) == ([], 1.0)


def test_default_pairs_put_every_lada_row_against_random_and_its_base():
    found = ["random", "ent", "ent_infomixup", "var_infomixup_fixed", "badge"]
    acquisition = {"random": "random", "ent": "ent", "ent_infomixup": "ent", "badge": "badge"}
    acquisition["var_infomixup_fixed"] = "var"
    augment = {k: "none" for k in found} | {
        "ent_infomixup": "infomixup",
        "var_infomixup_fixed": "infomixup_fixed",
    }
    # Var Ratio has no runs here, so LADA_VarMix^fixed meets Random only
    assert default_pairs(found, acquisition, augment) == [
        ("ent_infomixup", "random"),
        ("ent_infomixup", "ent"),
        ("var_infomixup_fixed", "random"),
    ]


def test_differences_cis_two_sided_p_and_holm_over_the_family(runs):
    (family,), problems = compare(runs)
    assert not problems and family.kind == "exploratory"
    result = {(c.row, c.against): c for c in family.comparisons}
    assert set(result) == {("ent_infomixup", "random"), ("ent_infomixup", "ent")}
    c = result[("ent_infomixup", "random")]
    lada, random = CURVES[("ent", "infomixup")], CURVES[("random", "none")]
    final_a, final_b = [s[-1] for s in lada], [s[-1] for s in random]
    d = c.metrics["final"]
    reference = ttest_ind(final_a, final_b, equal_var=False)
    ci = reference.confidence_interval(0.95)
    assert (d.mean_a, d.mean_b, d.diff) == pytest.approx((76.0, 71.0, 5.0))
    assert (d.p, d.low, d.high) == pytest.approx((reference.pvalue, ci.low, ci.high), rel=1e-12)
    # Holm over the 6 tests printed (2 pairs x Final, Area, Best)
    tests = [(x, m) for x in family.comparisons for m in ("final", "area", "best")]
    adjusted = holm([x.metrics[m].p for x, m in tests])
    assert [x.holm[m] for x, m in tests] == pytest.approx(adjusted)
    assert family.size == 6 and c.holm["final"] >= d.p
    area = [sum(s) / 3 for s in lada], [sum(s) / 3 for s in random]
    assert c.metrics["area"].diff == pytest.approx(sum(area[0]) / 3 - sum(area[1]) / 3)
    # level at 20 labels, behind at 30 (58 < 61), ahead at 40 (76 > 71)
    assert (c.crossings, c.ahead_share) == ([40], pytest.approx(1 / 3))
    assert c.n == (3, 3) and (c.label, c.against_label) == ("LADA_EntMix", "Random")
    text = markdown([family])
    assert "6 two-sided Welch tests on the per-seed values, Holm-adjusted over these 6" in text
    assert "### Exploratory (not confirmatory)" in text
    line = [
        x for x in text.splitlines() if "| LADA_EntMix" in x and "| Random" in x and "Final" in x
    ]
    cells = [x.strip() for x in line[0].strip("|").split("|")]
    assert cells[3:8] == ["3 / 3", "76.00", "71.00", "+5.00", f"[{ci.low:+.2f}, {ci.high:+.2f}]"]


def test_a_direction_named_on_the_command_line_gives_one_sided_tests(runs, capsys):
    (family,), _ = compare(runs, alternative="greater")
    c = [x for x in family.comparisons if x.against == "random"][0]
    finals = (
        [s[-1] for s in CURVES[("ent", "infomixup")]],
        [s[-1] for s in CURVES[("random", "none")]],
    )
    assert c.metrics["final"].p == pytest.approx(
        ttest_ind(*finals, equal_var=False, alternative="greater").pvalue
    )
    assert c.metrics["final"].high == math.inf
    main([str(runs), "--alternative", "greater"])
    assert "one-sided (greater, named on the command line)" in capsys.readouterr().out


def test_named_pairs_and_their_errors(runs, capsys):
    (family,), _ = compare(runs, [("random", "ent")])
    (c,) = family.comparisons
    assert c.metrics["best"].diff == pytest.approx(71 - 61)
    assert "the pairs named with --pairs" in family.description
    with pytest.raises(AggregateError, match="no finished runs of both rows of badge:random"):
        compare(runs, [("badge", "random")])
    with pytest.raises(SystemExit, match="error: no finished runs of both rows of badge:random"):
        main([str(runs), "--pairs", "badge:random"])
    with pytest.raises(SystemExit):
        main([str(runs), "--pairs", "ent_infomixup"])
    assert "--pairs takes ROW:OTHER" in capsys.readouterr().err
    main([str(runs)])
    assert "| LADA_EntMix | Max Entropy" in capsys.readouterr().out


def test_a_folder_without_lada_rows_says_to_name_the_pairs(tmp_path):
    write_run(tmp_path, acquisition="random")
    with pytest.raises(SystemExit, match="name the rows with --pairs"):
        main([str(tmp_path)])


# --- the primary family a preset declares ---------------------------------------------------

BUDGET_ROWS = {
    ("random", "none"): 80.0,
    ("ent", "none"): 78.0,
    ("var", "none"): 81.0,
    ("ent", "infomixup_fixed"): 82.0,
    ("ent", "infomixup"): 82.5,
    ("var", "infomixup_fixed"): 83.0,
    ("var", "infomixup"): 81.5,
}


def write_budget(root, seeds=3, skip=()):
    """Runs of every row of experiment=table1_budget, the final accuracy level + a seed pattern."""
    for (acquisition, augment), level in BUDGET_ROWS.items():
        for seed in range(seeds):
            if (acquisition, augment, seed) in skip:
                continue
            final = level + (-1.0, 0.3, 0.9, -0.4, 0.2)[seed] * (1 + len(acquisition) / 10)
            write_run(
                root, acquisition=acquisition, augment=augment, seed=seed,
                accs=(50, 60 + seed, final), experiment="table1_budget",
            )  # fmt: skip


def test_primary_prints_the_declared_family_alone_holm_within_it(tmp_path, capsys):
    write_budget(tmp_path)
    families, problems = compare(tmp_path, primary=True)
    assert not problems and len(families) == 1
    (family,) = families
    assert family.kind == "primary" and "experiment=table1_budget" in family.description
    pairs = [(c.row, c.against) for c in family.comparisons]
    assert pairs == [
        ("ent_infomixup_fixed", "random"), ("ent_infomixup_fixed", "ent"),
        ("ent_infomixup", "random"), ("ent_infomixup", "ent"),
        ("var_infomixup_fixed", "random"), ("var_infomixup_fixed", "var"),
        ("var_infomixup", "random"), ("var_infomixup", "var"),
    ]  # fmt: skip
    assert family.metrics == ("final", "area") and family.size == 16
    p = [c.metrics[m].p for c in family.comparisons for m in ("final", "area")]
    assert [c.holm[m] for c in family.comparisons for m in ("final", "area")] == pytest.approx(
        holm(p)
    )
    main([str(tmp_path), "--primary"])
    out = capsys.readouterr().out
    assert "### Primary family: declared by experiment=table1_budget" in out
    assert "16 two-sided Welch tests" in out and "Exploratory" not in out and "| Best" not in out
    # without --primary: the primary family, then the exploratory one without its tests
    families, _ = compare(tmp_path)
    assert [f.kind for f in families] == ["primary", "exploratory"]
    exploratory = families[1]
    assert all(list(c.metrics) == ["best"] for c in exploratory.comparisons)
    assert exploratory.size == 8


def test_primary_family_with_too_few_or_unequal_seeds_names_the_row(tmp_path, capsys):
    write_budget(tmp_path / "short", skip={("var", "infomixup", 1), ("var", "infomixup", 2)})
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "short"), "--primary"])
    captured = capsys.readouterr()
    assert stop.value.code == 2 and captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert "row var_infomixup has 1 finished seed; the family needs at least 2" in line
    write_budget(tmp_path / "unequal", skip={("ent", "none", 2)})
    with pytest.raises(SystemExit):
        main([str(tmp_path / "unequal"), "--primary"])
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert "row ent has 2 finished seeds where the family's other rows have 3" in line
    assert captured.out == ""
    main([str(tmp_path / "unequal")])  # without --primary: a warning, the exploratory family
    captured = capsys.readouterr()
    assert (
        "warning: primary family not tested" in captured.err and "### Exploratory" in captured.out
    )


def test_primary_on_a_folder_whose_preset_declares_none_names_those_that_do(runs, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(runs), "--primary"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "declares a primary family" in err
    assert "the presets that do: beyond_budget, table1, table1_budget, table1_quick" in err


def test_runs_folder_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit, match="is a file; pass the folder that holds the runs"):
        main([str(tmp_path / "f")])


def test_named_pairs_leave_the_primary_familys_tests_to_it(tmp_path):
    write_budget(tmp_path)
    primary, exploratory = compare(tmp_path, [("ent_infomixup", "random"), ("var", "random")])[0]
    assert primary.kind == "primary" and primary.size == 16
    lada, var = exploratory.comparisons  # ent_infomixup:random keeps Best only
    assert (lada.row, lada.against, list(lada.metrics)) == ("ent_infomixup", "random", ["best"])
    assert list(var.metrics) == ["final", "area", "best"] and exploratory.size == 4


def test_an_unusable_run_is_named_and_the_rest_compared(runs, capsys):
    bad = runs / "quick/fashion/ent-none/seed1"
    (bad / "summary.json").write_text("{}")
    main([str(runs)])
    captured = capsys.readouterr()
    assert f"left out: {bad}: summary.json is not a ladarun summary" in captured.err
    assert "| LADA_EntMix | Max Entropy" in captured.out and "3 / 2" in captured.out


def test_primary_prints_a_finished_family_beside_one_that_cannot_be_tested(tmp_path, capsys):
    """A folder of two presets: table1_budget's rows are all in, beyond_budget's are not."""
    write_budget(tmp_path)
    write_run(tmp_path, acquisition="margin", seed=0, experiment="beyond_budget")
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), "--primary"])
    captured = capsys.readouterr()
    assert stop.value.code == 2
    assert "### Primary family: declared by experiment=table1_budget" in captured.out
    assert "beyond_budget" not in captured.out
    assert "row margin has 1 finished seed" in captured.err
