"""ladarun-compare: row-against-row differences, Welch tests and learning-curve crossings."""

import pandas as pd
import pytest
from scipy.stats import ttest_ind

from ladarun.report.compare import compare, crossings, default_pairs, main, markdown
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


def test_compare_gives_the_differences_tests_and_crossings_of_the_runs(runs):
    result = {(c.row, c.against): c for c in compare(runs)}
    assert set(result) == {("ent_infomixup", "random"), ("ent_infomixup", "ent")}
    c = result[("ent_infomixup", "random")]
    lada, random = CURVES[("ent", "infomixup")], CURVES[("random", "none")]
    final_a, final_b = [s[-1] for s in lada], [s[-1] for s in random]
    mean_a, mean_b, diff, p_one, p_two = c.metrics["final"]
    assert (mean_a, mean_b, diff) == pytest.approx((76.0, 71.0, 5.0))
    assert p_one == pytest.approx(
        ttest_ind(final_a, final_b, equal_var=False, alternative="greater").pvalue
    )
    assert p_two == pytest.approx(ttest_ind(final_a, final_b, equal_var=False).pvalue)
    area = [sum(s) / 3 for s in lada], [sum(s) / 3 for s in random]
    assert c.metrics["area"][2] == pytest.approx(sum(area[0]) / 3 - sum(area[1]) / 3)
    # level at 20 labels, behind at 30 (58 < 61), ahead at 40 (76 > 71)
    assert (c.crossings, c.ahead_share) == ([40], pytest.approx(1 / 3))
    assert c.n == (3, 3) and (c.label, c.against_label) == ("LADA_EntMix", "Random")
    assert result[("ent_infomixup", "ent")].crossings == []
    text = markdown(list(result.values()))
    assert "| LADA_EntMix | Random | 3 / 3 |" in text and "76.00 vs 71.00: +5.00" in text


def test_named_pairs_and_their_errors(runs, capsys):
    (c,) = compare(runs, [("random", "ent")])
    assert c.metrics["best"][2] == pytest.approx(71 - 61)
    with pytest.raises(AggregateError, match="no finished runs of both rows of badge:random"):
        compare(runs, [("badge", "random")])
    with pytest.raises(SystemExit, match="error: no finished runs of both rows of badge:random"):
        main([str(runs), "--pairs", "badge:random"])
    with pytest.raises(SystemExit):
        main([str(runs), "--pairs", "ent_infomixup"])
    assert "--pairs takes ROW:OTHER" in capsys.readouterr().err
    main([str(runs)])
    assert "| LADA_EntMix | Max Entropy | 3 / 3 |" in capsys.readouterr().out


def test_a_folder_without_lada_rows_says_to_name_the_pairs(tmp_path):
    write_run(tmp_path, acquisition="random")
    with pytest.raises(SystemExit, match="name the rows with --pairs"):
        main([str(tmp_path)])
