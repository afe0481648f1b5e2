"""The rows beyond the paper: each iteration's cost against Random's, and the embedding's cost.

    python benchmarks/run.py beyond [--labeled 40 520] [--repeats 3] [--embedding-cache DIR] [--note TEXT]

On the ``paper_budget`` protocol with experiment=beyond_budget's settings (Fashion-MNIST, crops
and flips), from shared mid-run states (``--labeled``: the initial training, then Random labels up
to that many points; 40 is an early iteration, where TypiClust clusters into at most 50 clusters
with exact k-means, and 520 the run's mean labeled-set size, where it clusters into 500 with
mini-batch k-means). Each row's whole iteration (acquire + train + test) is timed interleaved
with Random's, in one process, so machine drift cancels. The target (issue 33): TypiClust,
ProbCover and ALFA-Mix at most 3x Random's iteration.

The embedding is excluded: it is built once per dataset (or read from ``--embedding-cache``)
before any timing, and each row's acquisition is built once and reused, as a run reuses it. Its
one-off costs are reported separately: the SimCLR training time recorded in its cache file when
it was built, and the time of ProbCover's purity rule, timed here.
Results are appended to benchmarks/beyond.md (and beyond-<date>.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from iteration import Bench, Row, compose_config, machine, save_numbers  # noqa: E402
from ladarun.acquisition.probcover import purity_delta  # noqa: E402
from ladarun.config import build  # noqa: E402
from ladarun.runtime import library_versions, resolve_device  # noqa: E402

ROWS = [
    Row("Margin", "margin", "none", 0.0),
    Row("TypiClust", "typiclust", "none", 0.0),
    Row("ProbCover", "probcover", "none", 0.0),
    Row("ALFA-Mix", "alfamix", "none", 0.0),
    Row("LADA_MarginMix^fixed", "margin", "infomixup_fixed", 0.0),
]
TARGET = 3.0  # issue 33: at most 3x Random's iteration
TARGET_ROWS = ("TypiClust", "ProbCover", "ALFA-Mix")
RANDOM = Row("Random", "random", "none", 1.0)


def built(bench: Bench, row: Row, cache: str) -> Any:
    """The row's acquisition, built once with the embedding (and ProbCover's δ) already loaded."""
    cfg = compose_config(bench.base + [f"acquisition={row.acquisition}"])
    acquisition = build(cfg.acquisition)
    acquisition.use_cache(cache)
    bench.iteration(row, 0, acquisition=acquisition)  # warm-up: reads the embedding, δ, kernels
    return acquisition


def embedding_costs(bench: Bench, acquisition: Any) -> dict[str, Any]:
    """What the embedding cost once: SimCLR (from its cache record) and the purity rule (timed)."""
    record = torch.load(acquisition.cache_file, map_location="cpu", weights_only=True)
    features = acquisition._features
    t0, cpu0 = time.perf_counter(), time.process_time()
    delta = purity_delta(features, bench.data.num_classes, 0.95, acquisition.spec.seed)
    return {
        "simclr_build_s": record["build_s"],
        "simclr_build_cpu_s": record.get("build_cpu_s"),
        "simclr_threads": record["threads"],
        "simclr_settings": record["settings"],
        "purity_rule_s": time.perf_counter() - t0,
        "purity_rule_cpu_s": time.process_time() - cpu0,
        "delta": delta,
    }


def measure(bench: Bench, repeats: int, cache: str, once: bool) -> list[dict[str, Any]]:
    """Every row against Random from ``bench``'s state; with ``once``, the embedding's costs too."""
    acquisitions = {row.label: built(bench, row, cache) for row in ROWS}
    bench.iteration(RANDOM)  # warm-up
    pairs: dict[str, list[tuple[dict, dict]]] = {row.label: [] for row in ROWS}
    for rep in range(repeats):
        for row in ROWS:
            base = bench.iteration(RANDOM, rep)
            timed = bench.iteration(row, rep, acquisition=acquisitions[row.label])
            pairs[row.label].append((base, timed))
            print(
                f"beyond: {int((bench.labeled_at >= 0).sum())} labels, repeat {rep + 1}/{repeats} "
                f"{row.label}: {timed['iter_s']:.2f} s (acquire {timed['acquire_s']:.2f} s) vs "
                f"Random {base['iter_s']:.2f} s",
                flush=True,
            )
    out = []
    for row in ROWS:
        p = pairs[row.label]
        ratio = statistics.median(t["iter_s"] / b["iter_s"] for b, t in p)
        out.append(
            {
                "row": row.label,
                "labeled": int((bench.labeled_at >= 0).sum()),
                "ratio_median": ratio,
                "ratio_min": min(t["iter_s"] / b["iter_s"] for b, t in p),
                "ratio_max": max(t["iter_s"] / b["iter_s"] for b, t in p),
                "acquire_over_random_iter": statistics.median(
                    t["acquire_s"] / b["iter_s"] for b, t in p
                ),
                "acquire_s": statistics.median(t["acquire_s"] for _, t in p),
                "iter_s": statistics.median(t["iter_s"] for _, t in p),
                "random_iter_s": statistics.median(b["iter_s"] for b, _ in p),
                "target": TARGET if row.label in TARGET_ROWS else None,
                "met": ratio <= TARGET if row.label in TARGET_ROWS else None,
            }
        )
    if once:
        out.append({"embedding": embedding_costs(bench, acquisitions["ProbCover"])})
    return out


def write(out_dir: Path, report: dict[str, Any]) -> Path:
    save_numbers(out_dir, "beyond", report)
    lines = [
        f"\n## {report['date']} on {report['machine']}\n\n",
        f"torch {report['versions']['torch']}, {report['threads']} intra-op thread(s); base config: "
        f"`{' '.join(report['base'])}`; {report['repeats']} repeats, interleaved with Random.\n\n",
        "| labels | row | iteration / Random's (median) | min-max | acquisition / Random's iteration "
        "| acquire s | iteration s | Random iteration s | target | met |\n",
        "|---|---|---|---|---|---|---|---|---|---|\n",
    ]
    for r in (r for r in report["rows"] if "row" in r):
        target = f"{r['target']:.1f}" if r["target"] else "-"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(
            f"| {r['labeled']} | {r['row']} | {r['ratio_median']:.2f} | {r['ratio_min']:.2f}-"
            f"{r['ratio_max']:.2f} | {r['acquire_over_random_iter']:.2f} | {r['acquire_s']:.2f} "
            f"| {r['iter_s']:.2f} | {r['random_iter_s']:.2f} | {target} | {met} |\n"
        )
    for e in (r["embedding"] for r in report["rows"] if "embedding" in r):
        lines.append(
            f"\nEmbedding (once per dataset, excluded above): SimCLR {e['simclr_build_s']:.0f} s "
            f"({e['simclr_build_cpu_s'] or float('nan'):.0f} CPU s) on {e['simclr_threads']} "
            f"thread(s) when built ({e['simclr_settings']}); ProbCover's purity rule "
            f"{e['purity_rule_s']:.0f} s ({e['purity_rule_cpu_s']:.0f} CPU s) here "
            f"(δ = {e['delta']:.4f}).\n"
        )
    if report.get("note"):
        lines.append(f"\n{report['note']}\n")
    md = out_dir / "beyond.md"
    header = (
        "# Rows beyond the paper: iteration cost against Random\n\nAppended by `make bench` "
        "(`python benchmarks/run.py beyond`); newest last. Raw numbers in beyond-*.json.\n"
    )
    md.write_text((md.read_text() if md.exists() else header) + "".join(lines))
    return md


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labeled", type=int, nargs="+", default=[40, 520])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--embedding-cache",
        default=os.environ.get("LADARUN_EMBEDDINGS", str(Path.home() / ".cache" / "ladarun")),
        help="a writable embedding_cache folder (default $LADARUN_EMBEDDINGS or ~/.cache/ladarun)",
    )
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument(
        "base",
        nargs="*",
        help="config overrides of the shared setting (after --), default: experiment=beyond_budget "
        "data_dir=$LADARUN_DATA or ../shared/data",
    )
    args = parser.parse_args(argv)
    data_dir = os.environ.get(
        "LADARUN_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    base = args.base or ["experiment=beyond_budget", f"data_dir={data_dir}"]
    base = base + [f"embedding_cache={args.embedding_cache}"]
    device = resolve_device(args.device)
    results: list[dict[str, Any]] = []
    for i, labeled in enumerate(args.labeled):
        bench = Bench(base, labeled, device)
        results += measure(bench, args.repeats, args.embedding_cache, once=i == 0)
    report = {
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "machine": machine(),
        "versions": library_versions(),
        "threads": torch.get_num_threads(),
        "base": base,
        "repeats": args.repeats,
        "rows": results,
        "note": args.note,
    }
    print(f"beyond: results appended to {write(Path(args.out), report)}", flush=True)


if __name__ == "__main__":
    main()
