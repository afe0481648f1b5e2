"""queries.csv (which points a run labeled, when, with what score and partner) and the
ladarun-queries class-balance report."""

from __future__ import annotations

import csv
import math

import pytest

from helpers import CPU, SMOKE, Crash, read_csv, tiny_protocol, toy_data
from ladarun.acquisition import MaxEntropy, RandomAcquisition
from ladarun.augment.infomixup import InfoMixup
from ladarun.errors import DamagedFileError
from ladarun.loop import Experiment, RunOptions, run_active_learning
from ladarun.models import cnn
from ladarun.report.class_balance import balance_table, class_balance, main
from ladarun.rundir.checkpoint import Checkpoint
from ladarun.rundir.files import CHECKPOINT, QUERIES
from runs_factory import write_run


def run(out_dir, acquisition=None, augment=None, **kw):
    return run_active_learning(
        Experiment(
            data=toy_data(),
            model_factory=cnn,
            acquisition=acquisition or MaxEntropy(),
            protocol=tiny_protocol(iterations=4, epochs=2, query=4),
            seed=5,
            augment=augment,
        ),
        out_dir,
        CPU,
        RunOptions(progress=False, **kw),
    )


def by_iteration(rows):
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(int(r["iteration"]), []).append(r)
    return out


def test_one_row_per_labeled_point_with_its_label_and_score(tmp_path):
    summary = run(tmp_path)
    rows = read_csv(tmp_path / QUERIES)
    data = toy_data()
    assert len(rows) == summary.n_labeled == 6 + 4 * 4
    assert len({r["index"] for r in rows}) == len(rows)
    assert all(int(r["label"]) == int(data.y_train[int(r["index"])]) for r in rows)
    groups = by_iteration(rows)
    assert sorted(groups) == [0, 1, 2, 3, 4]
    # the initial set: 2 of each of the 3 classes, no score
    assert sorted(int(r["label"]) for r in groups[0]) == [0, 0, 1, 1, 2, 2]
    assert all(r["score"] == "" and r["partner"] == "" for r in groups[0])
    for it in range(1, 5):
        scores = [float(r["score"]) for r in groups[it]]
        assert len(scores) == 4 and scores == sorted(scores, reverse=True)  # best first
        # an entropy in bits of 3 classes
        assert all(0 <= s <= math.log2(3) + 1e-6 for s in scores)
        assert all(r["partner"] == "" for r in groups[it])


def test_random_has_no_score(tmp_path):
    run(tmp_path, acquisition=RandomAcquisition())
    rows = read_csv(tmp_path / QUERIES)
    assert len(rows) == 22 and all(r["score"] == "" for r in rows)


def test_pairs_name_each_other(tmp_path):
    run(tmp_path, augment=InfoMixup(layers=[1], policy_epochs=1, policy_batch_size=10))
    rows = read_csv(tmp_path / QUERIES)
    for it, group in by_iteration(rows).items():
        if it == 0:
            continue
        partner = {r["index"]: r["partner"] for r in group}
        score = {r["index"]: r["score"] for r in group}
        assert len(group) == 4
        for index, other in partner.items():
            assert other in partner and partner[other] == index and other != index
            assert score[index] == score[other] != ""  # the pair's Eq. 15 score


def crash_at_checkpoint(monkeypatch, call_number):
    """Make the ``call_number``-th checkpoint save raise: the iteration's CSV rows are written,
    its checkpoint is not."""
    real, calls = Checkpoint.save, {"n": 0}

    def save(self, state):
        calls["n"] += 1
        if calls["n"] == call_number:
            raise Crash()
        return real(self, state)

    monkeypatch.setattr(Checkpoint, "save", save)


def test_killed_and_resumed_run_writes_the_same_file(tmp_path, monkeypatch):
    run(tmp_path / "straight")
    with monkeypatch.context() as m:
        crash_at_checkpoint(m, 3)  # iteration 2's rows are written, its checkpoint is not
        with pytest.raises(Crash):
            run(tmp_path / "resumed")
    partial = read_csv(tmp_path / "resumed" / QUERIES)
    assert max(int(r["iteration"]) for r in partial) == 2  # ahead of the checkpoint (1)
    run(tmp_path / "resumed")
    straight = (tmp_path / "straight" / QUERIES).read_text()
    assert (tmp_path / "resumed" / QUERIES).read_text() == straight


def test_a_resume_without_the_file_or_with_another_runs_file_is_refused(tmp_path, monkeypatch):
    """The checkpoint has finished iterations whose picks queries.csv must hold: a missing file
    (or one of another run) stops the resume with one line, and the fix it names works."""
    run(tmp_path / "straight")
    with monkeypatch.context() as m:
        crash_at_checkpoint(m, 3)
        with pytest.raises(Crash):
            run(tmp_path / "resumed")
    saved = (tmp_path / "resumed" / QUERIES).read_text()
    (tmp_path / "resumed" / QUERIES).unlink()
    with pytest.raises(
        DamagedFileError,
        match=r"queries.csv is missing, but checkpoint.pt has finished iterations 0\.\.1; put back",
    ):
        run(tmp_path / "resumed")
    foreign = [r for r in read_csv(tmp_path / "straight" / QUERIES) if int(r["iteration"]) <= 1]
    foreign[-1]["index"] = str(int(foreign[-1]["index"]) + 1)  # iteration 1: not this run's pick
    with open(tmp_path / "resumed" / QUERIES, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(foreign[0]))
        writer.writeheader()
        writer.writerows(foreign)
    with pytest.raises(DamagedFileError, match="disagrees with checkpoint.pt about iteration 1"):
        run(tmp_path / "resumed")
    (tmp_path / "resumed" / QUERIES).write_text(saved)  # put back: the resume goes on
    run(tmp_path / "resumed")
    assert (tmp_path / "resumed" / QUERIES).read_text() == (
        tmp_path / "straight" / QUERIES
    ).read_text()


def test_class_balance_statistics():
    even = class_balance([0, 0, 1, 1], 2)
    assert even == {
        "picks": 4,
        "classes": 2,
        "entropy_bits": 1.0,
        "balance": 1.0,
        "min_share": 0.5,
        "max_share": 0.5,
    }
    skewed = class_balance([0, 0, 0, 1], 4)
    assert skewed["classes"] == 2 and skewed["min_share"] == 0.0 and skewed["max_share"] == 0.75
    expected = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert skewed["entropy_bits"] == pytest.approx(expected)
    assert skewed["balance"] == pytest.approx(expected / 2)


def test_ladarun_queries_reports_each_row_and_reads_a_kept_checkpoint(
    compose_cfg, tmp_path, capsys
):
    from ladarun.runner import run_from_config

    runs = tmp_path / "runs"
    for seed in (0, 1):
        run_from_config(compose_cfg(SMOKE + [f"seed={seed}"]), runs / f"ent/seed{seed}")
    run_from_config(
        compose_cfg(SMOKE + ["acquisition=random", "keep_checkpoint=true"]), runs / "random"
    )
    per_run, notes = balance_table(runs)
    assert not notes and len(per_run) == 3
    assert set(per_run["picks"]) == {8}  # 2 iterations x 4
    assert set(per_run["source"]) == {QUERIES}
    assert set(balance_table(runs, initial=True)[0]["picks"]) == {16}  # + 2 of each of 4 classes
    assert set(balance_table(runs, until=1)[0]["picks"]) == {4}  # iteration 1 alone
    # from the kept checkpoint alone: the same picks, so the same statistics
    from_csv = per_run[per_run["row"] == "Random"].iloc[0]
    (runs / "random" / QUERIES).unlink()
    per_run, _ = balance_table(runs)
    from_ckpt = per_run[per_run["row"] == "Random"].iloc[0]
    assert from_ckpt["source"] == CHECKPOINT
    for stat in ("picks", "classes", "entropy_bits", "min_share", "max_share"):
        assert from_ckpt[stat] == pytest.approx(from_csv[stat])
    assert main([str(runs)]) == 0
    out = capsys.readouterr().out
    rows = {r[2]: r for r in table_rows(out)}
    assert rows["Max Entropy"][1:5] == ["synthetic", "Max Entropy", "2", "8 ± 0"]
    assert rows["Random"][1:5] == ["synthetic", "Random", "1", "8"]
    (runs / "random" / CHECKPOINT).unlink()
    assert main([str(runs)]) == 0
    assert "no queries.csv (the run predates it)" in capsys.readouterr().out


def table_rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|") and not set(line) <= set("|:- ")
    ]


def write_picks(run_dir, labels):
    """A queries.csv with the initial set (iteration 0) and the picks of iterations 1.."""
    lines = ["index,label,iteration,score,partner"]
    lines += [f"{i},{i % 4},0,," for i in range(4)]
    lines += [f"{100 + i},{label},{1 + i // 2},0.5," for i, label in enumerate(labels)]
    (run_dir / QUERIES).write_text("\n".join(lines) + "\n")


def test_protocols_are_reported_apart_and_a_seed_is_counted_once(tmp_path, capsys):
    quick = write_run(tmp_path / "a", acquisition="ent", seed=0)
    write_picks(quick, [0, 0, 0, 0])
    paper = write_run(tmp_path / "a", acquisition="ent", seed=0, protocol="paper")
    write_picks(paper, [0, 1, 2, 3])
    copy = write_run(tmp_path / "b", acquisition="ent", seed=0)  # the same seed in another folder
    write_picks(copy, [1, 1, 1, 1])
    per_run, notes = balance_table([tmp_path / "a", tmp_path / "b"])
    assert len(per_run) == 2 and sorted(per_run["balance"]) == [0.0, 1.0]
    (note,) = notes
    assert str(copy) in note and "counted once, from" in note and str(quick) in note
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    rows = table_rows(capsys.readouterr().out)
    sections = sorted(r[0] for r in rows[1:])
    assert sections == [
        "Protocol paper (iterations=2), model cnn",
        "Protocol quick (iterations=2), model cnn",
    ]
    assert all(r[3] == "1" for r in rows[1:])  # one seed each, never averaged across protocols


class _RunsCode:
    """Unpickled by a full torch.load, this writes a file: the crafted checkpoint of issue 35."""

    marker = ""

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_a_crafted_checkpoint_is_never_unpickled(tmp_path, capsys):
    import torch

    run = write_run(tmp_path / "runs", acquisition="ent")
    crafted = _RunsCode()
    crafted.marker = str(tmp_path / "ran.txt")
    torch.save({"labeled_at": torch.zeros(4, dtype=torch.long), "x": crafted}, run / CHECKPOINT)
    per_run, notes = balance_table(tmp_path / "runs")
    assert per_run.empty and not (tmp_path / "ran.txt").exists()
    (note,) = notes
    assert "checkpoint.pt cannot be read safely" in note and "delete it" in note


def test_bad_report_options_are_one_line_naming_the_fix(tmp_path, capsys):
    run = write_run(tmp_path / "runs", acquisition="ent")
    write_picks(run, [0, 1])
    for option, value, message in (
        ("--csv", str(tmp_path), "is a folder; give a file name"),
        ("--csv", str(tmp_path / "missing" / "x.csv"), "does not exist; create it"),
        ("--data-dir", str(tmp_path / "nowhere"), "is not a folder"),
    ):
        assert main([str(tmp_path / "runs"), option, value]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, option
    (tmp_path / "file").write_text("x")
    assert main([str(tmp_path / "file")]) == 2
    assert "is a file; pass the folder" in capsys.readouterr().err


def test_a_summary_of_the_wrong_shape_is_named_and_the_rest_reported(tmp_path, capsys):
    good = write_run(tmp_path, acquisition="ent", seed=0)
    write_picks(good, [0, 1])
    bad = write_run(tmp_path, acquisition="ent", seed=1)
    write_picks(bad, [0, 1])
    (bad / "summary.json").write_text("[]")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"- {bad}: summary.json is not a ladarun summary (it holds list)" in out
    assert [r[3] for r in table_rows(out)[1:]] == ["1"]
