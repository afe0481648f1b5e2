"""docs/extending.md as tested code: every code block it shows for a file is that file of examples/,
and every example runs through a user config folder on hydra.searchpath, as the guide says."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from helpers import REPO, ladarun, read_csv
from ladarun.errors import DataNotFoundError
from ladarun.runner import run_from_config

EXAMPLES = REPO / "examples"
SEARCHPATH = f"hydra.searchpath=[file://{EXAMPLES / 'my_conf'}]"
# quick runs on the synthetic data: 4 classes, 2 iterations of +4, 1 epoch each
QUICK = ["dataset=synthetic", "protocol=smoke", "progress=false"]


def guide_blocks() -> list[tuple[str, str]]:
    """(path under examples/, text) of every code block of the guide that names its file on one of
    its first two lines (``# my_ext/acquisition.py``, or after ``# @package _global_``); a block
    ``(continued)`` is a later part of the same file."""
    text = (REPO / "docs" / "extending.md").read_text()
    found = []
    for body in re.findall(r"```(?:python|yaml)\n(.*?)```", text, flags=re.S):
        head = body.split("\n", 2)[:2]
        for n, line in enumerate(head):
            named = re.match(r"# (my_(?:ext|conf)/\S+?\.(?:py|yaml))(:| \(continued\)|$)", line)
            if named:
                # the path line is the guide's, unless the file has it (a method file's)
                rest = body.split("\n", n + 1)[n + 1]
                found.append((named.group(1), body if named.group(2) == ":" else rest))
                break
    return found


def test_every_block_of_the_guide_is_an_example_file_and_every_file_is_shown() -> None:
    blocks = guide_blocks()
    assert len(blocks) >= 12
    for path, text in blocks:
        assert text in (EXAMPLES / path).read_text(), path
    shown = {p for p, _ in blocks}
    files = {
        p.relative_to(EXAMPLES).as_posix()
        for p in EXAMPLES.rglob("*")
        if p.suffix in (".py", ".yaml") and p.name != "__init__.py"
    }
    assert files == shown


@pytest.fixture
def user_package(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # as `pip install -e` of the user's package would
    yield
    for name in [m for m in sys.modules if m == "my_ext" or m.startswith("my_ext.")]:
        del sys.modules[name]


@pytest.mark.parametrize(
    "overrides, columns",
    [
        (["acquisition=margin"], []),
        (["method=margin_infomixup"], ["virtual_score"]),
        (["method=margin"], []),
        (["acquisition=ent_shortlist", "acquisition.factor=2"], ["shortlist_entropy"]),
        (["acquisition=embedding_norm", "augment=infomixup"], []),
        (["acquisition=embedding_norm", "augment=infostn"], []),
        (["acquisition=ent", "augment=input_mixup"], ["mixup_alpha"]),
        (["model=small_vgg", "method=ent_infomixup"], []),
    ],
)
def test_each_example_runs_from_the_user_config_folder(
    user_package, compose_cfg, tmp_path, overrides, columns
) -> None:
    cfg = compose_cfg([SEARCHPATH, *QUICK, *overrides])
    run_from_config(cfg, tmp_path / "run")
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert [r["n_labeled"] for r in rows] == ["8", "12", "16"]
    for column in columns:
        assert rows[-1][column] != ""
    if "method=margin_infomixup" in overrides:
        assert cfg.acquisition.name == "margin" and cfg.augment.name == "infomixup"


def test_the_example_dataset_reads_its_npz_file(user_package, compose_cfg, tmp_path) -> None:
    rng = np.random.default_rng(0)
    y_train, y_test = np.arange(60) % 3, np.arange(30) % 3
    x_train = (rng.random((60, 10, 10)) * 40 + 60 * y_train[:, None, None]).astype(np.uint8)
    x_test = (rng.random((30, 10, 10)) * 40 + 60 * y_test[:, None, None]).astype(np.uint8)
    np.savez(
        tmp_path / "my_data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
    )
    cfg = compose_cfg(
        [SEARCHPATH, "dataset=npz", f"data_dir={tmp_path}", "protocol=smoke", "progress=false"]
    )
    run_from_config(cfg, tmp_path / "run")
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert rows[0]["n_labeled"] == "6" and float(rows[-1]["best_acc"]) > 50  # 3 separable classes
    missing = compose_cfg(
        [SEARCHPATH, "dataset=npz", f"data_dir={tmp_path / 'no'}", "protocol=smoke"]
    )
    with pytest.raises(DataNotFoundError, match="my_data.npz"):
        run_from_config(missing, tmp_path / "run2")


def test_the_guides_method_row_lands_where_the_guide_says(user_package, tmp_path) -> None:
    """The console script, as a user types it: method=margin_infomixup lands in
    outputs/<dataset>/margin-infomixup/<other settings>/seed0."""
    res = ladarun(SEARCHPATH, "method=margin_infomixup", *QUICK, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (
        tmp_path / "outputs/synthetic/margin-infomixup/protocol=smoke/seed0/summary.json"
    ).exists()
