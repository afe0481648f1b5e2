"""ladarun-figures: Figure 3 (accuracy vs labels) and Figure 6a (virtual-instance score) as PNGs."""
import matplotlib.image
import pandas as pd
import pytest

from ladarun.figures import _mean_std, main, write_figures
from runs_factory import write_run


def test_mean_and_sample_std_per_point():
    a = pd.DataFrame({"n_labeled": [20, 30], "test_acc": [50.0, 60.0]})
    b = pd.DataFrame({"n_labeled": [20, 30, 40], "test_acc": [54.0, 62.0, 70.0]})
    stats = _mean_std([a, b], "n_labeled", "test_acc").set_index("n_labeled")
    assert list(stats["mean"]) == [52.0, 61.0, 70.0]
    assert stats.loc[20, "std"] == pytest.approx(2 ** 1.5)  # ddof=1: |54 - 50| / sqrt(2)
    assert list(stats["count"]) == [2, 2, 1] and pd.isna(stats.loc[40, "std"])


def assert_png(path):
    assert path.stat().st_size > 5000
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_accuracy_and_virtual_score_figures(tmp_path, capsys):
    for seed in (0, 1):
        write_run(tmp_path, acquisition="random", seed=seed, accs=(50, 60 + seed, 70))
        write_run(tmp_path, acquisition="ent", seed=seed, accs=(50, 65, 75 + seed))
        for augment, score in (("infomixup", 2.0), ("infomixup_fixed", 1.5), ("manifold_mixup", 1.0)):
            write_run(tmp_path, acquisition="ent", augment=augment, seed=seed, accs=(50, 66, 77),
                      extra={"virtual_score": [0, score, score + 0.1 * seed], "tau_mean": [0, 0.5, 0.5]})
    written = write_figures(tmp_path)
    names = sorted(p.relative_to(tmp_path / "figures").as_posix() for p in written)
    assert names == ["quick_model_cnn/fashion_accuracy.png", "quick_model_cnn/fashion_ent_virtual_score.png"]
    for path in written:
        assert_png(path)


def test_no_virtual_score_figure_without_the_column(tmp_path, capsys):
    write_run(tmp_path, acquisition="random")
    write_run(tmp_path, acquisition="var", dataset="svhn", accs=(20, 30), finished=False)  # unfinished runs count too
    assert main([str(tmp_path), "--out", str(tmp_path / "png")]) == 0
    out = capsys.readouterr()
    written = sorted(p.name for p in (tmp_path / "png").rglob("*.png"))
    assert written == ["fashion_accuracy.png", "svhn_accuracy.png"]
    assert "Figure 6a was not drawn" in out.err
    assert main([str(tmp_path / "nothing_here")]) == 2
