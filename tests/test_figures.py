"""ladarun-figures: Figure 3 (accuracy vs labels, a panel per Table 1 group) and Figure 6a
(virtual-instance score), PNG and PDF."""

import matplotlib.image
import matplotlib.text
import pandas as pd
import pytest

from ladarun.report.figures import (
    WIDTH,
    accuracy_figure,
    difference_figure,
    difference_stats,
    main,
    method_styles,
    write_figures,
)
from ladarun.report.runs import curve_stats
from ladarun.report.stats import welch
from ladarun.report.table import aggregate
from runs_factory import write_run


def test_mean_and_sample_std_per_point():
    a = pd.DataFrame({"n_labeled": [20, 30], "test_acc": [50.0, 60.0]})
    b = pd.DataFrame({"n_labeled": [20, 30, 40], "test_acc": [54.0, 62.0, 70.0]})
    stats = curve_stats([a, b], "n_labeled", "test_acc").set_index("n_labeled")
    assert list(stats["mean"]) == [52.0, 61.0, 70.0]
    assert stats.loc[20, "std"] == pytest.approx(2**1.5)  # ddof=1: |54 - 50| / sqrt(2)
    assert list(stats["count"]) == [2, 2, 1] and pd.isna(stats.loc[40, "std"])


def assert_png(path):
    assert path.stat().st_size > 5000
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert image[..., :3].std() > 0.05  # not a blank canvas


def assert_pdf(path):
    data = path.read_bytes()
    # reruns give the same file
    assert data.startswith(b"%PDF") and len(data) > 5000 and b"CreationDate" not in data


def test_accuracy_and_virtual_score_figures(tmp_path, capsys):
    for seed in (0, 1):
        write_run(tmp_path, acquisition="random", seed=seed, accs=(50, 60 + seed, 70))
        write_run(tmp_path, acquisition="ent", seed=seed, accs=(50, 65, 75 + seed))
        for augment, score in (
            ("infomixup", 2.0),
            ("infomixup_fixed", 1.5),
            ("manifold_mixup", 1.0),
        ):
            write_run(
                tmp_path,
                acquisition="ent",
                augment=augment,
                seed=seed,
                accs=(50, 66, 77),
                extra={"virtual_score": [0, score, score + 0.1 * seed], "tau_mean": [0, 0.5, 0.5]},
            )
    written = write_figures(tmp_path)
    names = sorted(p.relative_to(tmp_path / "figures").as_posix() for p in written)
    assert names == [
        f"quick_iterations_2_model_cnn/{n}.{ext}"
        for n in ("fashion_accuracy", "fashion_difference", "fashion_ent_virtual_score")
        for ext in ("pdf", "png")
    ]
    for path in written:
        if path.suffix == ".png":
            assert_png(path)
            assert_pdf(path.with_suffix(".pdf"))


def test_no_virtual_score_figure_without_the_column(tmp_path, capsys):
    write_run(tmp_path, acquisition="random")
    # unfinished runs count too
    write_run(tmp_path, acquisition="var", dataset="svhn", accs=(20, 30), finished=False)
    assert main([str(tmp_path), "--out", str(tmp_path / "png")]) == 0
    out = capsys.readouterr()
    written = sorted(p.name for p in (tmp_path / "png").rglob("*.*"))
    assert written == [
        "fashion_accuracy.pdf",
        "fashion_accuracy.png",
        "svhn_accuracy.pdf",
        "svhn_accuracy.png",
    ]
    assert "Figure 6a was not drawn" in out.err
    assert main([str(tmp_path / "nothing_here")]) == 2


def _runs_of_every_group(root):
    for seed in (0, 1):
        for acquisition, augment in (
            ("random", "none"),
            ("bald", "none"),
            ("badge", "none"),
            ("ent", "none"),
            ("ent", "infomixup"),
            ("vaal", "none"),
            ("var", "none"),
            ("var", "infomixup_fixed"),
        ):
            write_run(
                root, acquisition=acquisition, augment=augment, seed=seed, accs=(50, 60 + seed, 70)
            )
        # an ablation of LADA_EntMix
        write_run(
            root,
            acquisition="ent",
            augment="infomixup",
            seed=seed,
            accs=(50, 61, 72),
            folder=f"softplus/seed{seed}",
            settings={"augment": {"tau_activation": "softplus"}},
        )


def _panels(fig):
    out = {}
    for ax in fig.axes:
        if ax.get_visible():
            out[ax.get_title()] = [
                (line.get_label(), line.get_color(), line.get_linestyle())
                for line in ax.get_lines()
            ]
    return out


def test_accuracy_figure_has_one_panel_per_group_with_random_as_reference(tmp_path):
    _runs_of_every_group(tmp_path)
    table = aggregate(tmp_path).table
    panels = _panels(accuracy_figure(table[~table["is_variant"]], "t"))
    assert list(panels) == ["Baselines", "Entropy-based", "VAAL-based", "VarRatio-based"]
    for group, lines in panels.items():
        label, color, style = lines[0]  # Random first, dashed black, in every panel
        assert label == "Random (2 seeds)" and color == "black" and style == "--", group
        others = lines[1:]
        assert others and "Random" not in " ".join(label for label, _, _ in others)
        assert len({color for _, color, _ in others}) == len(others) and "black" not in {
            c for _, c, _ in others
        }
    assert [label for label, _, _ in panels["Baselines"]] == [
        "Random (2 seeds)",
        "BALD (2 seeds)",
        "BADGE (2 seeds)",
    ]
    assert [label for label, _, _ in panels["Entropy-based"]][1:] == [
        "Max Entropy (2 seeds)",
        r"LADA$_{\mathrm{EntMix}}$ (2 seeds)",
    ]
    # The ablation is drawn only when asked for, dotted, in its row's panel and colour.
    with_ablations = _panels(accuracy_figure(table, "t"))["Entropy-based"]
    assert (
        with_ablations[-1][0].endswith("[augment.tau_activation=softplus] (2 seeds)")
        and with_ablations[-1][2] == ":"
        and with_ablations[-1][1] == with_ablations[-2][1]
    )


def _texts(fig):
    fig.canvas.draw()  # lay out, so every text object has its final size
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text()]


def test_figures_print_at_six_and_a_half_inches_with_no_text_under_8_pt(tmp_path):
    _runs_of_every_group(tmp_path)
    table = aggregate(tmp_path).table
    plain = table[~table["is_variant"]]
    styles = method_styles(table)
    for fig in (accuracy_figure(plain, "t", styles), difference_figure(plain, "t", styles)):
        assert fig.get_size_inches()[0] == WIDTH
        sizes = [t.get_fontsize() for t in _texts(fig)]
        assert sizes and min(sizes) >= 8
    main([str(tmp_path), "--out", str(tmp_path / "out")])
    for png in (tmp_path / "out").rglob("*.png"):
        width = matplotlib.image.imread(png).shape[1]
        assert width == 200 * WIDTH  # saved at 200 dpi, not cropped: 6.5 inches exactly


def test_no_panel_is_empty_and_a_method_keeps_its_colour_in_every_figure(tmp_path):
    # three groups: the third panel takes the whole last row instead of leaving one empty
    for seed in (0, 1):
        for acquisition, augment in (
            ("random", "none"), ("badge", "none"), ("ent", "none"), ("ent", "infomixup"),
            ("var", "none"), ("var", "infomixup"),
        ):  # fmt: skip
            extra = {"virtual_score": [0, 1.0, 1.1]} if augment != "none" else None
            write_run(tmp_path, acquisition=acquisition, augment=augment, seed=seed, extra=extra)
    table = aggregate(tmp_path).table
    styles = method_styles(table)
    figs = [accuracy_figure(table, "t", styles), difference_figure(table, "t", styles)]
    for fig in figs:
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert len(axes) == len(fig.axes) and all(ax.get_lines() for ax in axes)
        last = axes[-1].get_position()
        assert last.width > 1.8 * axes[0].get_position().width  # spans both columns
    colour = {}
    for fig in figs:
        for lines in _panels(fig).values():
            for label, color, _ in lines:
                name = label.split(" (")[0]
                assert colour.setdefault(name, color) == color, name
    assert len(colour) == 6 and colour["Random"] == "black"


def test_difference_figure_is_each_row_minus_random_with_its_welch_band(tmp_path):
    for seed in (0, 1, 2):
        write_run(tmp_path, acquisition="random", seed=seed, accs=(50, 60 + seed, 70 - seed))
        write_run(tmp_path, acquisition="ent", seed=seed, accs=(50, 64 + 2 * seed, 75))
    agg = aggregate(tmp_path)
    runs = agg.table.set_index("row")["run"]
    stats = difference_stats(list(runs["ent"]), list(runs["random"])).set_index("n_labeled")
    expected = welch([64, 66, 68], [60, 61, 62])
    assert stats.loc[30, "mean"] == pytest.approx(5.0)
    assert (stats.loc[30, "low"], stats.loc[30, "high"]) == pytest.approx(
        (expected.low, expected.high)
    )
    fig = difference_figure(agg.table, "t", method_styles(agg.table))
    (ax,) = fig.axes
    assert ax.get_ylabel() == "accuracy − Random (points)"
    line = [x for x in ax.get_lines() if x.get_label().startswith("Max Entropy")][0]
    assert list(line.get_ydata()) == pytest.approx(list(stats["mean"]))


def test_titles_are_words_not_config_keys(tmp_path):
    _runs_of_every_group(tmp_path)
    written = write_figures(tmp_path)
    assert written
    fig = accuracy_figure(aggregate(tmp_path).table, "t")
    assert fig.get_suptitle().startswith("t\ntest accuracy")
    from ladarun.report.figures import section_words

    run = aggregate(tmp_path).table["run"].iloc[0]
    assert (
        section_words(run, "fashion")
        == "Fashion-MNIST, 2 rounds of 10 labels, 10 epochs a round, a small CNN"
    )


def test_ablations_flag(tmp_path):
    _runs_of_every_group(tmp_path)
    out_plain, out_ablations = tmp_path / "plain", tmp_path / "ablations"
    assert main([str(tmp_path), "--out", str(out_plain)]) == 0
    assert main([str(tmp_path), "--out", str(out_ablations), "--ablations"]) == 0
    section = "quick_iterations_2_model_cnn"  # the hand-written runs have 2 iterations
    plain = (out_plain / section / "fashion_accuracy.png").read_bytes()
    assert plain != (out_ablations / section / "fashion_accuracy.png").read_bytes()
    assert_png(out_plain / section / "fashion_accuracy.png")
    assert_pdf(out_plain / section / "fashion_accuracy.pdf")
    image = matplotlib.image.imread(out_plain / section / "fashion_accuracy.png")
    assert image.shape[1] > 1000 and image.shape[0] > 800  # a 2 x 2 grid of panels


def test_an_unusable_run_is_named_and_the_rest_drawn(tmp_path, capsys):
    write_run(tmp_path, acquisition="random", seed=0)
    bad = write_run(tmp_path, acquisition="random", seed=1)
    (bad / "summary.json").write_text("[]")
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"left out: {bad}: summary.json is not a ladarun summary (it holds list)" in err
    assert list((tmp_path / "out").rglob("fashion_accuracy.png"))
    (tmp_path / "taken").write_text("x")
    assert main([str(tmp_path), "--out", str(tmp_path / "taken")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
