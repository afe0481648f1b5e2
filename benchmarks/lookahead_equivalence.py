"""Is the tabulated look-ahead estimator the same method as ``mc``? (docs/methods.md §9.6)

    .venv/bin/python benchmarks/lookahead_equivalence.py [--iterations 1 5 15] [--acquisitions ent var]
        [--grids 5 9 17 33] [--seeds 0 1] [-- overrides]

Fixed iteration states of a Fashion quick run (the initial training, then Random queries of 10
and 10 training epochs each, snapshotted after the given iterations), one fresh candidate subset
of 2000 (1000 pairs) per state, both mixing stages k = 1, 2. On each it prints:

- the interpolation error of the tabulated alpha_i(lambda) against exact forwards at random
  lambda ~ U(0, 1) (8 per pair), for each grid size;
- tau* learned by the policy with each estimator, and with ``mc`` under another seed (the
  yardstick: ``mc`` against itself); with the same seed both estimators start from the same
  policy and draw the same lambdas, so ``mc vs tab`` isolates the estimator and ``mc vs tab'``
  compares across seeds like the yardstick;
- Eq. 15's virtual term with mc's tau*: the table's error on the same lambda draws, beside
  the term's own sampling spread (N = 5 samples, redrawn 32 times);
- the overlap of the selected pairs (Eq. 16's top query/2 = 5, and the top 50 for a less coarse
  figure) and the Spearman correlation of the Eq. 15 scores, again with mc-vs-mc as yardstick;
- the seconds of the policy's training plus Eq. 15 per estimator.

Everything runs the package's own code (InfoMixup.pair_taus and virtual_scores, the acquisitions'
pair scorers, TabulatedScorer), as choose_query does, with k fixed instead of drawn.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from iteration import Bench, compose_config  # noqa: E402  (a sibling module)
from ladarun.acquisition.base import AcquisitionContext, top_k  # noqa: E402
from ladarun.augment import InfoMixup  # noqa: E402
from ladarun.augment.infomixup import _FrozenEval, cached_features  # noqa: E402
from ladarun.augment.tabulated import DEFAULT_GRID, TabulatedScorer, lambda_grid  # noqa: E402
from ladarun.config import build  # noqa: E402
from ladarun.loop import acquire_step, train_iteration  # noqa: E402
from ladarun.runtime import resolve_device, seed_everything, synchronize  # noqa: E402


def states(bench: Bench, iterations: Sequence[int]) -> list[tuple[int, dict, torch.Tensor]]:
    """(iteration, model state, labeled_at) after each of ``iterations`` Random queries + training."""
    model, optimizer = bench.new_model()
    model.load_state_dict(bench.model_state)
    optimizer.load_state_dict(bench.optimizer_state)
    labeled_at = bench.labeled_at.clone()
    random_cfg = compose_config(bench.base + ["acquisition=random", "augment=none"])
    random_acq, no_aug = build(random_cfg.acquisition), build(random_cfg.augment)
    gen = torch.Generator().manual_seed(1000)
    out = []
    for it in range(1, max(iterations) + 1):
        if it in iterations:  # the state an acquisition of iteration ``it`` sees
            out.append(
                (it, {k: v.clone() for k, v in model.state_dict().items()}, labeled_at.clone())
            )
        acquire_step(model, bench.data, labeled_at, it, random_acq, no_aug, bench.protocol, gen)
        train_iteration(
            model, optimizer, bench.data, labeled_at, no_aug, bench.protocol, bench.protocol.epochs
        )
    return out


def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    return len(set(a.tolist()) & set(b.tolist())) / a.numel()


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, nargs="*", default=[1, 5, 15])
    parser.add_argument("--acquisitions", nargs="*", default=["ent"])
    parser.add_argument("--layers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--grids", type=int, nargs="*", default=[5, 9, 17, 33])
    parser.add_argument(
        "--grid", type=int, default=DEFAULT_GRID, help="grid of the tau*/overlap comparison"
    )
    parser.add_argument("--seeds", type=int, nargs=2, default=[0, 1])
    parser.add_argument("--errors-only", action="store_true", help="only the interpolation errors")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("base", nargs="*", help="config overrides (after --)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    data_dir = os.environ.get(
        "LADARUN_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    base = args.base or ["dataset=fashion", "protocol=quick", f"data_dir={data_dir}"]
    bench = Bench(base, labeled=0, device=device)
    print(f"equivalence: {' '.join(base)}; states after iterations {args.iterations}", flush=True)
    errors: dict[int, list[tuple[float, float, float]]] = {g: [] for g in args.grids}
    summary: dict[str, list[float]] = {}

    def note(key: str, value: float) -> None:
        summary.setdefault(key, []).append(value)

    for it, model_state, labeled_at in states(bench, args.iterations):
        model, _ = bench.new_model()
        model.load_state_dict(model_state)
        pool = torch.nonzero(labeled_at < 0).flatten()
        gen = torch.Generator().manual_seed(it)
        candidates = pool[
            torch.randperm(pool.numel(), generator=gen)[: bench.protocol.pool_subset].to(device)
        ]
        n_pairs = candidates.numel() // 2
        first, second = candidates[:n_pairs], candidates[n_pairs : 2 * n_pairs]
        ctx = AcquisitionContext(
            model, bench.data, torch.nonzero(labeled_at >= 0).flatten(), gen, 100
        )
        for name in args.acquisitions:
            cfg = compose_config(base + [f"acquisition={name}", "augment=infomixup"])
            acquisition = build(cfg.acquisition)
            acquisition.prepare(ctx)
            for k in args.layers:
                with _FrozenEval(model):
                    h1 = cached_features(model, bench.data.x_train, first, k, 100)
                    h2 = cached_features(model, bench.data.x_train, second, k, 100)
                    scorer = acquisition.pair_scorer(ctx, first, second, k, h1, h2)
                    # interpolation error at random lambda, per grid size
                    torch.manual_seed(123)
                    lam = torch.rand(8, n_pairs, device=device)
                    rows = torch.arange(n_pairs, device=device)
                    with torch.no_grad():
                        exact = torch.cat(
                            [scorer.mixed(lam[:, r], r) for r in rows.split(100)], dim=1
                        )
                    line = []
                    for g in args.grids:
                        tab = TabulatedScorer(scorer, n_pairs, lambda_grid(g, device), 500)
                        err = (tab.mixed(lam, rows) - exact).abs()
                        stats = (float(err.mean()), float(err.quantile(0.99)), float(err.max()))
                        errors[g].append(stats)
                        line.append(
                            f"G={g}: mean {stats[0]:.2e} p99 {stats[1]:.2e} max {stats[2]:.2e}"
                        )
                    print(
                        f"iter {it} {name} k={k} |alpha range {float(exact.min()):.2f}-{float(exact.max()):.2f}| "
                        + "; ".join(line),
                        flush=True,
                    )
                    if args.errors_only:
                        continue
                    # tau*, Eq. 15 and the selected pairs under each estimator
                    results = {}
                    for label, estimator, seed in (
                        ("mc", "mc", args.seeds[0]),
                        ("mc'", "mc", args.seeds[1]),
                        ("tab", "tabulated", args.seeds[0]),
                        ("tab'", "tabulated", args.seeds[1]),
                    ):
                        aug = InfoMixup(layers=[k], estimator=estimator, grid=args.grid)
                        seed_everything(seed)
                        policy_gen = torch.Generator().manual_seed(seed)
                        synchronize(device)  # the previous estimator's work is not timed
                        t0 = time.perf_counter()
                        s = scorer
                        if estimator == "tabulated":
                            s = TabulatedScorer(scorer, n_pairs, aug.grid.to(device), 500)
                        tau, _ = aug.pair_taus(s, h1, h2, policy_gen)
                        total = s.base() + aug.virtual_scores(s, tau)
                        synchronize(device)  # the Eq. 15 passes still queued on a GPU
                        seconds = time.perf_counter() - t0
                        top5 = top_k(total, bench.protocol.query // 2, policy_gen)
                        top50 = torch.topk(total, 50).indices
                        results[label] = (tau, total, top5, top50, seconds)
                    # Eq. 15's virtual term with mc's tau*: the table's error on the same lambda
                    # draws, against the term's own sampling spread (32 redraws, on a 33-point table)
                    tau_mc, virtual = results["mc"][0], {}
                    for name_, s_ in (
                        ("exact", scorer),
                        (
                            "table",
                            TabulatedScorer(scorer, n_pairs, lambda_grid(args.grid, device), 500),
                        ),
                    ):
                        torch.manual_seed(7)
                        virtual[name_] = aug.virtual_scores(s_, tau_mc)
                    fine = TabulatedScorer(scorer, n_pairs, lambda_grid(33, device), 500)
                    redraws = torch.stack([aug.virtual_scores(fine, tau_mc) for _ in range(32)])
                    term_err = float((virtual["table"] - virtual["exact"]).abs().mean())
                    term_sd = float(redraws.std(0).mean())
                    note("Eq.15 virtual term: |table - exact|, same lambdas", term_err)
                    note("Eq.15 virtual term: sampling SD (N = 5)", term_sd)
                    print(
                        f"  Eq. 15 virtual term (mc's tau*): mean |table - exact| {term_err:.4f} "
                        f"on the same lambdas; its sampling SD over redraws {term_sd:.4f}",
                        flush=True,
                    )
                if args.errors_only:
                    continue
                for a, b in (("mc", "mc'"), ("mc", "tab"), ("mc", "tab'"), ("tab", "tab'")):
                    ta, sa, p5a, p50a, _ = results[a]
                    tb, sb, p5b, p50b, _ = results[b]
                    key = f"{a} vs {b}"
                    corr = float(torch.corrcoef(torch.stack([ta, tb]))[0, 1])
                    rho = float(spearmanr(sa.cpu().numpy(), sb.cpu().numpy()).statistic)
                    note(f"{key}: |tau diff|", float((ta - tb).abs().mean()))
                    note(f"{key}: tau corr", corr)
                    note(f"{key}: top-5 overlap", overlap(p5a, p5b))
                    note(f"{key}: top-50 overlap", overlap(p50a, p50b))
                    note(f"{key}: Eq.15 Spearman", rho)
                    print(
                        f"  {key}: mean tau* {float(ta.mean()):.3f} / {float(tb.mean()):.3f}, "
                        f"mean |tau diff| {float((ta - tb).abs().mean()):.4f}, tau corr {corr:.3f}, "
                        f"top-5 overlap {overlap(p5a, p5b):.1f}, top-50 overlap {overlap(p50a, p50b):.2f}, "
                        f"Eq.15 Spearman {rho:.3f}",
                        flush=True,
                    )
                for label in ("mc", "tab"):
                    note(f"seconds {label}", results[label][4])
                print(
                    f"  seconds (policy + Eq. 15): mc {results['mc'][4]:.1f}, tabulated {results['tab'][4]:.1f}",
                    flush=True,
                )
    print(
        "\nInterpolation error |tabulated - exact| at lambda ~ U(0,1), over all states (mean of the per-state figures):"
    )
    print("| grid | mean | p99 | max |\n|---|---|---|---|")
    for g, rows_ in errors.items():
        print(
            f"| {g} | {statistics.mean(r[0] for r in rows_):.2e} | {statistics.mean(r[1] for r in rows_):.2e} "
            f"| {max(r[2] for r in rows_):.2e} |"
        )
    print(
        f"\nEstimators compared (grid {args.grid}), mean over {len(args.iterations)} states x "
        f"{len(args.layers)} layers x {len(args.acquisitions)} acquisitions; ' = the other seed:"
    )
    print("| comparison | mean value |\n|---|---|")
    for key, values in summary.items():
        print(f"| {key} | {statistics.mean(values):.4f} |")


if __name__ == "__main__":
    main()
