"""Is the CPU learner better than a linear model? (the "fair Table 1" check)

    python scripts/learner_check.py RUNS_DIR [RUNS_DIR ...] [--data-dir ../shared/data] [--out FILE]

For each label count n in 20, 320, 1020 it compares
- the learner: test accuracy of ``acquisition=random`` runs found under RUNS_DIR (Fashion-MNIST,
  quick schedule) at the iteration where they hold n labels, mean ± std over their seeds;
- scikit-learn's LogisticRegression on raw pixels in [0, 1], trained on n labels drawn the way
  a Random run draws them (2 per class, then uniformly at random), and on n labels drawn
  uniformly at random; mean ± std over 5 draws each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from ladarun.data.vision import FashionMNISTSource
from ladarun.report.runs import find_run_dirs, load_run

COUNTS = (20, 320, 1020)


def linear_baseline(x_train, y_train, x_test, y_test, n: int, seed: int, balanced: bool) -> float:
    rng = np.random.default_rng(seed)
    if balanced:  # as a Random run draws: 2 per class, then uniformly at random
        first = np.concatenate(
            [rng.choice(np.flatnonzero(y_train == c), 2, replace=False) for c in range(10)]
        )
        rest = rng.choice(
            np.setdiff1d(np.arange(len(y_train)), first), n - first.size, replace=False
        )
        idx = np.concatenate([first, rest])
    else:  # n uniformly at random (some classes may be missing at n = 20)
        idx = rng.choice(len(y_train), n, replace=False)
    clf = LogisticRegression(max_iter=2000).fit(x_train[idx], y_train[idx])
    return 100.0 * clf.score(x_test, y_test)


def learner(dirs: list[Path]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {n: [] for n in COUNTS}
    for root in dirs:
        for path in find_run_dirs(root):
            run = load_run(path)
            if (
                not run.finished
                or run.dataset != "fashion"
                or run.config["acquisition"]["name"] != "random"
            ):
                continue
            m = pd.read_csv(path / "metrics.csv")
            for n in COUNTS:
                hit = m.loc[m.n_labeled == n, "test_acc"]
                if len(hit):
                    out[n].append(float(hit.iloc[0]))
    return out


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f} (n={len(values)})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    # mean 0, std 1: the source's scaling alone, i.e. pixels in [0, 1]
    data = FashionMNISTSource(mean=0.0, std=1.0, download=False).load(
        a.data_dir, torch.device("cpu")
    )
    x_train, x_test = data.x_train.flatten(1).numpy(), data.x_test.flatten(1).numpy()
    y_train, y_test = data.y_train.numpy(), data.y_test.numpy()
    ours = learner(a.runs)
    lines = [
        "| labels | learner (the Random runs found) | LogisticRegression, 2 per class + random (5 draws) "
        "| LogisticRegression, uniformly random (5 draws) |",
        "|---|---|---|---|",
    ]
    for n in COUNTS:
        lin = {
            b: [linear_baseline(x_train, y_train, x_test, y_test, n, seed, b) for seed in range(5)]
            for b in (True, False)
        }
        lines.append(f"| {n} | {fmt(ours[n])} | {fmt(lin[True])} | {fmt(lin[False])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
