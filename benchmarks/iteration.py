"""Per-iteration benchmarks: the Time column, loop overhead, throughput and memory, and GPU figures.

    python benchmarks/run.py iteration [--sections time overhead memory switches estimator gpu]
        [--device cuda] [--note TEXT] [-- overrides]


Every measurement runs the runner's own code (``acquire_step``, ``train_iteration``,
``evaluate``) on configs composed exactly as the CLI composes them. Sections:

- ``time``: each row's whole-iteration wall time relative to Random, in one process on the
  same data and the same starting state, interleaved Random, row, Random, row, ... so that
  machine drift cancels; median and spread of the ratio over repeats.
- ``overhead``: training images per second of ladarun's training step against a bare
  PyTorch loop over the same model, batch size and device-resident data.
- ``memory``: each row's peak memory in a fresh subprocess (process RSS; CUDA max
  allocated on a GPU) and its acquisition throughput (candidates scored per second).
- ``switches``: seconds per iteration of Random, Max Entropy and LADA_EntMix with each speed
  switch of this device on and off (CPU: channels_last, bf16), interleaved.
- ``estimator``: LADA_EntMix, LADA_VarMix and LADA_VaalMix with each look-ahead estimator
  (``augment.estimator=mc|tabulated``), interleaved with Random: acquisition seconds, the
  acquisition's speed-up over ``mc`` and the whole-iteration ratio to Random.
- ``gpu`` (CUDA only): the same at the paper protocol with the GPU switches (deterministic,
  bf16, channels_last, compile).

Like cli.py, this is an entry point and may use Hydra's compose API.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from ladarun.conf import CONF_DIR
from ladarun.config import build
from ladarun.loop import acquire_step, initial_labeled, train_iteration
from ladarun.protocol import Protocol
from ladarun.report import rows as table1
from ladarun.runtime import (
    SpeedOptions,
    cpu_model,
    keep_large_buffers,
    library_versions,
    resolve_device,
    seed_everything,
    synchronize,
)
from ladarun.training import evaluate, make_optimizer

# Issue 7's own targets, tighter than the paper's Time column for the InfoMixup rows.
TARGETS = {
    "LADA_EntMix": 1.15,
    "LADA_VarMix": 1.15,
    "LADA_EntMix^fixed": 1.03,
    "LADA_VarMix^fixed": 1.03,
}


@dataclass
class Row:
    label: str
    acquisition: str
    augment: str
    paper_time: float

    @property
    def target(self) -> float:
        return TARGETS.get(self.label, self.paper_time)


def implemented_rows(only: Optional[Sequence[str]] = None) -> list[Row]:
    """Table 1's rows (paper_table1.csv) whose configs exist; unimplemented rows are skipped, never faked.
    The rows beyond the paper have no paper figure and their own benchmark (beyond.py)."""
    rows = [
        Row(r.label, r.acquisition, r.augment, r.paper_time)
        for r in table1.rows()
        if r.group != table1.BEYOND_GROUP
        and (CONF_DIR / "acquisition" / f"{r.acquisition}.yaml").exists()
        and (CONF_DIR / "augment" / f"{r.augment}.yaml").exists()
    ]
    if only:
        unknown = set(only) - {r.label for r in rows}
        if unknown:
            sys.exit(
                f"bench: unknown or unimplemented rows {sorted(unknown)}; implemented: {[r.label for r in rows]}"
            )
        rows = [r for r in rows if r.label in only]
    return rows


def compose_config(overrides: Sequence[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


class Bench:
    """One dataset, model and starting state that every row's iteration starts from.

    The state is what a run has mid-way: the initial training done, then Random labels
    added up to ``labeled`` points (the quick protocol's mean labeled-set size is 170).
    """

    def __init__(self, base: Sequence[str], labeled: int, device: torch.device, seed: int = 0):
        keep_large_buffers()
        self.base, self.device, self.seed = list(base), device, seed
        cfg = compose_config(self.base)
        self.protocol: Protocol = build(cfg.protocol)
        self.speed = SpeedOptions(**OmegaConf.to_container(cfg.speed, resolve=True))
        self.data = build(cfg.dataset, name=cfg.dataset.name).load(cfg.data_dir, device)
        self.data.x_train = self.speed.prepare_images(self.data.x_train)
        self.data.x_test = self.speed.prepare_images(self.data.x_test)
        self.model_factory = build(cfg.model, _partial_=True)
        seed_everything(seed, deterministic=bool(cfg.deterministic))
        gen = torch.Generator().manual_seed(seed)
        self.labeled_at = torch.full(
            (self.data.y_train.numel(),), -1, dtype=torch.long, device=device
        )
        self.labeled_at[
            initial_labeled(
                self.data.y_train, self.data.num_classes, self.protocol.initial_per_class, gen
            )
        ] = 0
        model, optimizer = self.new_model()
        with self.speed.autocast_on(device):
            train_iteration(
                model,
                optimizer,
                self.data,
                self.labeled_at,
                build(compose_config(self.base + ["augment=none"]).augment),
                self.protocol,
                self.protocol.initial_epochs,
            )
        pool = torch.nonzero(self.labeled_at < 0).flatten()
        extra = max(0, labeled - int((self.labeled_at >= 0).sum()))
        self.labeled_at[pool[torch.randperm(pool.numel(), generator=gen)[:extra].to(device)]] = 0
        self.model_state = copy.deepcopy(model.state_dict())
        self.optimizer_state = copy.deepcopy(optimizer.state_dict())

    def new_model(self, model_cfg: Optional[DictConfig] = None):
        """A fresh classifier; ``model_cfg`` is a row's own model config (BALD adds head dropout,
        which has no parameters, so the shared state still loads into it)."""
        factory = self.model_factory if model_cfg is None else build(model_cfg, _partial_=True)
        model = self.speed.prepare_model(
            factory(
                in_channels=self.data.in_channels,
                num_classes=self.data.num_classes,
                image_size=self.data.image_size,
            ).to(self.device)
        )
        return model, make_optimizer(model, self.protocol)

    def iteration(
        self, row: Row, repeat: int = 0, extra: Sequence[str] = (), acquisition: Any = None
    ) -> dict[str, float]:
        """One whole iteration of ``row`` from the shared state: acquire, train, evaluate.

        ``extra`` overrides are added to the row's config (e.g. ``augment.estimator=tabulated``).
        ``acquisition``: a row's acquisition built beforehand and reused, so that what it loads
        once per run (a cached embedding) is not timed again.
        """
        cfg = compose_config(
            self.base + [f"acquisition={row.acquisition}", f"augment={row.augment}", *extra]
        )
        acquisition, augment = acquisition or build(cfg.acquisition), build(cfg.augment)
        augment.check_compatible(acquisition, row.acquisition)
        model, optimizer = self.new_model(cfg.model)
        model.load_state_dict(self.model_state)
        optimizer.load_state_dict(self.optimizer_state)
        labeled_at = self.labeled_at.clone()
        seed_everything(self.seed + repeat, deterministic=bool(cfg.deterministic))
        gen = torch.Generator().manual_seed(self.seed + repeat)
        synchronize(self.device)
        t0 = time.perf_counter()
        with self.speed.autocast_on(self.device):
            acquire_step(model, self.data, labeled_at, 1, acquisition, augment, self.protocol, gen)
            synchronize(self.device)
            t1 = time.perf_counter()
            train_iteration(
                model,
                optimizer,
                self.data,
                labeled_at,
                augment,
                self.protocol,
                self.protocol.epochs,
            )
            synchronize(self.device)
            t2 = time.perf_counter()
            evaluate(model, self.data.x_test, self.data.y_test, self.protocol.eval_batch_size)
            synchronize(self.device)
        t3 = time.perf_counter()
        return {"acquire_s": t1 - t0, "train_s": t2 - t1, "eval_s": t3 - t2, "iter_s": t3 - t0}


def time_column(
    bench: Bench, rows: list[Row], repeats: int, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Ratios of whole-iteration time to Random, interleaved per repeat."""
    random_row = Row("Random", "random", "none", 1.0)
    bench.iteration(random_row)  # warm-up: first-call allocations and kernel selection
    per_row: dict[str, list[tuple[dict, dict]]] = {r.label: [] for r in rows if r.label != "Random"}
    for rep in range(repeats):
        for row in rows:
            if row.label == "Random":
                continue
            base = bench.iteration(random_row, rep)
            timed = bench.iteration(row, rep)
            per_row[row.label].append((base, timed))
            log(
                f"bench: repeat {rep + 1}/{repeats} {row.label}: {timed['iter_s']:.2f} s vs "
                f"Random {base['iter_s']:.2f} s "
                f"(ratio {timed['iter_s'] / base['iter_s']:.2f})"
            )
    results = []
    for row in rows:
        if row.label == "Random":
            continue
        pairs = per_row[row.label]
        ratios = [t["iter_s"] / b["iter_s"] for b, t in pairs]
        acq_ratios = [t["acquire_s"] / max(b["acquire_s"], 1e-9) for b, t in pairs]

        def med(key: str, which: int = 1, pairs: list = pairs) -> float:
            return statistics.median(p[which][key] for p in pairs)

        results.append(
            {
                "row": row.label,
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "acquire_ratio_median": statistics.median(acq_ratios),
                "paper": row.paper_time,
                "target": row.target,
                "met": statistics.median(ratios) <= row.target,
                "iter_s": med("iter_s"),
                "acquire_s": med("acquire_s"),
                "train_s": med("train_s"),
                "eval_s": med("eval_s"),
                "random_iter_s": med("iter_s", 0),
                "candidates_per_s": bench.protocol.pool_subset / med("acquire_s")
                if bench.protocol.pool_subset
                else float("nan"),
            }
        )
    return results


ESTIMATOR_ROWS = ("LADA_EntMix", "LADA_VarMix", "LADA_VaalMix")
ESTIMATORS = ("mc", "tabulated")
# Issue 19's targets for the tabulated estimator: LADA_EntMix's acquisition at least 4x faster
# than mc's, and its whole iteration at most 2.0x Random's.
ESTIMATOR_TARGETS = {"acquire_speedup": 4.0, "ratio": 2.0}


def estimator_section(
    bench: Bench, repeats: int, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """The look-ahead rows with each ``augment.estimator``: acquisition seconds and the
    whole-iteration ratio to Random, interleaved Random, row with mc, row with tabulated, ...
    in one process from the shared state, so drift cancels (docs/methods.md §9.6)."""
    random_row = Row("Random", "random", "none", 1.0)
    rows = [r for r in implemented_rows() if r.label in ESTIMATOR_ROWS]
    bench.iteration(random_row)  # warm-up
    runs: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for rep in range(repeats):
        for row in rows:
            base = bench.iteration(random_row, rep)
            for estimator in ESTIMATORS:
                timed = bench.iteration(row, rep, [f"augment.estimator={estimator}"])
                runs.setdefault((row.label, estimator), []).append((base, timed))
                log(
                    f"bench: repeat {rep + 1}/{repeats} {row.label} estimator={estimator}: acquire "
                    f"{timed['acquire_s']:.2f} s, iteration {timed['iter_s']:.2f} s vs Random "
                    f"{base['iter_s']:.2f} s (ratio {timed['iter_s'] / base['iter_s']:.2f})"
                )
    out = []
    for row in rows:
        mc = runs[(row.label, "mc")]
        for estimator in ESTIMATORS:
            pairs = runs[(row.label, estimator)]
            # per repeat: mc's acquisition over this one's (both beside the same Random iteration)
            speedups = [m[1]["acquire_s"] / p[1]["acquire_s"] for m, p in zip(mc, pairs)]
            ratios = [t["iter_s"] / b["iter_s"] for b, t in pairs]
            out.append(
                {
                    "row": row.label,
                    "estimator": estimator,
                    "acquire_s": statistics.median(t["acquire_s"] for _, t in pairs),
                    "acquire_min_s": min(t["acquire_s"] for _, t in pairs),
                    "acquire_speedup": statistics.median(speedups),
                    "iter_s": statistics.median(t["iter_s"] for _, t in pairs),
                    "random_iter_s": statistics.median(b["iter_s"] for b, _ in pairs),
                    "ratio_median": statistics.median(ratios),
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                }
            )
    return out


def bare_epoch(model, optimizer, x, y, indices, batch_size, transform=None) -> None:
    """The reference: the plainest PyTorch training loop over device-resident tensors
    (with the same batched augmentation as ours when the dataset has one)."""
    model.train()
    order = indices[torch.randperm(indices.numel(), device=indices.device)]
    for batch in order.split(batch_size):
        xb = x[batch] if transform is None else transform(x[batch])
        loss = F.cross_entropy(model(xb), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def loop_overhead(bench: Bench, epochs: int, repeats: int) -> dict[str, Any]:
    """Training images/s of ladarun's ``train_iteration`` (no augmentation) against ``bare_epoch``."""
    model, optimizer = bench.new_model()
    data, bs = bench.data, bench.protocol.batch_size
    idx = torch.nonzero(bench.labeled_at >= 0).flatten()
    augment = build(compose_config(bench.base + ["augment=none"]).augment)
    protocol = copy.copy(bench.protocol)

    def ours():
        train_iteration(model, optimizer, data, bench.labeled_at, augment, protocol, epochs)

    def bare():
        for _ in range(epochs):
            bare_epoch(model, optimizer, data.x_train, data.y_train, idx, bs, data.train_transform)

    timings: dict[str, list[float]] = {"ladarun": [], "bare": []}
    with bench.speed.autocast_on(bench.device):
        ours(), bare()  # warm-up
        for _ in range(repeats):
            for name, fn in (("ladarun", ours), ("bare", bare)):
                synchronize(bench.device)
                t0 = time.perf_counter()
                fn()
                synchronize(bench.device)
                timings[name].append(time.perf_counter() - t0)
    images = epochs * idx.numel()
    ours_ips = images / statistics.median(timings["ladarun"])
    bare_ips = images / statistics.median(timings["bare"])
    return {
        "labeled": idx.numel(),
        "epochs": epochs,
        "batch_size": bs,
        "ladarun_images_per_s": ours_ips,
        "bare_images_per_s": bare_ips,
        "ratio": ours_ips / bare_ips,
        "target": 0.95,
        "met": ours_ips / bare_ips >= 0.95,
    }


def _status_mib(field: str) -> Optional[float]:
    """VmRSS / VmHWM of this process from /proc (Linux), in MiB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0, clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_probe(
    base: Sequence[str], row: Row, labeled: int, device: torch.device
) -> dict[str, Any]:
    """Run in a fresh subprocess: the state, then one iteration of ``row``; peak memory.

    Loading the dataset peaks higher than most iterations, so the process-lifetime peak would
    hide the row. Where Linux allows it, the peak-RSS mark is reset after the state is built and
    the iteration's own peak is read back (``iteration_peak_rss_mib``)."""
    bench = Bench(base, labeled, device)
    before = _status_mib("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lifetime_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    reset = _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timing = bench.iteration(row)
    return {
        "row": row.label,
        "rss_before_mib": before,
        "iteration_peak_rss_mib": _status_mib("VmHWM") if reset else None,
        "peak_rss_mib": max(
            lifetime_before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ),
        "cuda_max_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else None,
        "acquire_s": timing["acquire_s"],
    }


def memory_column(
    base: Sequence[str], rows: list[Row], labeled: int, device: str
) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--probe-memory",
            row.label,
            "--labeled",
            str(labeled),
            "--device",
            device,
            "--",
            *base,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"bench: memory probe of {row.label} failed:\n{res.stderr[-3000:]}")
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


GPU_SWITCHES = {
    "baseline (fp32, NCHW, eager, deterministic)": [],
    "deterministic=false": ["deterministic=false"],
    "bf16 autocast": ["deterministic=false", "speed.autocast=bf16"],
    "bf16 + channels_last": [
        "deterministic=false",
        "speed.autocast=bf16",
        "speed.channels_last=true",
    ],
    "bf16 + channels_last + compile": [
        "deterministic=false",
        "speed.autocast=bf16",
        "speed.channels_last=true",
        "speed.compile=true",
    ],
}
# On the CPU, oneDNN's convolution backward converts NCHW inputs to its own layout on every
# call (a copy of each conv input per step); channels_last skips it. compile needs a C++
# toolchain and is left to the GPU table.
CPU_SWITCHES = {
    "baseline (fp32, NCHW, eager)": [],
    "channels_last": ["speed.channels_last=true"],
    "bf16 autocast": ["speed.autocast=bf16"],
    "bf16 + channels_last": ["speed.autocast=bf16", "speed.channels_last=true"],
}
SWITCH_ROWS = ("Random", "Max Entropy", "LADA_EntMix")


def switch_section(
    base: Sequence[str],
    labeled: int,
    device: torch.device,
    repeats: int,
    switches: dict[str, list[str]],
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Seconds per iteration of Random, Max Entropy and LADA_EntMix with each speed switch.

    One shared state per switch setting; per row, one warm-up iteration each (compilation),
    then repeats interleaved across the settings so drift cancels. ``speedup`` is the
    baseline's median over the setting's.
    """
    rows = [r for r in implemented_rows() if r.label in SWITCH_ROWS]
    benches = {name: Bench(list(base) + extra, labeled, device) for name, extra in switches.items()}
    baseline = next(iter(switches))
    out = []
    for row in rows:
        times: dict[str, list[float]] = {name: [] for name in benches}
        for bench in benches.values():
            bench.iteration(row)  # warm-up
        for rep in range(repeats):
            for name, bench in benches.items():
                times[name].append(bench.iteration(row, rep)["iter_s"])
        for name in benches:
            med = statistics.median(times[name])
            out.append(
                {
                    "switches": name,
                    "row": row.label,
                    "iter_s": med,
                    "min_s": min(times[name]),
                    "speedup": statistics.median(times[baseline]) / med,
                }
            )
            log(
                f"bench: switches {name} {row.label}: {med:.2f} s/iteration ({out[-1]['speedup']:.2f}x the baseline)"
            )
    return out


def gpu_section(
    base: Sequence[str], labeled: int, device: torch.device, repeats: int
) -> list[dict[str, Any]]:
    """Paper-protocol seconds per iteration for Random, Max Entropy, LADA_EntMix, per switch."""
    return switch_section(
        base, labeled, device, repeats, GPU_SWITCHES, log=lambda s: print(s, flush=True)
    )


def machine() -> str:
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}"


def save_numbers(out_dir: Path, name: str, report: dict[str, Any]) -> None:
    """``<out_dir>/<name>-<date>.json``: every number of a report, beside its Markdown record."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["date"].replace(":", "")
    (out_dir / f"{name}-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")


def write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    """benchmarks/bench-<date>.json (all numbers) and a Markdown section appended to benchmarks/bench.md."""
    save_numbers(out_dir, "bench", report)
    lines = [
        f"\n## {report['date']} on {report['machine']}\n",
        f"torch {report['versions']['torch']}, torchvision {report['versions']['torchvision']}, "
        f"device {report['device']}"
        + (f" ({report['threads']} intra-op threads)" if "threads" in report else "")
        + f"; base config: `{' '.join(report['base']) or '(defaults)'}`; "
        f"state: {report['labeled']} labels; {report['repeats']} repeats.\n",
    ]
    if report.get("time"):
        lines += [
            "\n### Time column: whole-iteration wall time relative to Random (interleaved, one process)\n\n",
            "| row | ratio (median) | min-max | paper | target | met | acquire s | train s | eval "
            "s | Random iter s | candidates/s |\n",
            "|---|---|---|---|---|---|---|---|---|---|---|\n",
        ]
        for r in report["time"]:
            lines.append(
                f"| {r['row']} | {r['ratio_median']:.2f} | "
                f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f} | {r['paper']:.2f} "
                f"| {r['target']:.2f} | {'yes' if r['met'] else 'NO'} | {r['acquire_s']:.2f} | {r['train_s']:.2f} "
                f"| {r['eval_s']:.2f} | {r['random_iter_s']:.2f} | {r['candidates_per_s']:.0f} |\n"
            )
    if report.get("overhead"):
        o = report["overhead"]
        lines += [
            "\n### Loop overhead: training images/s, ladarun's step against a bare PyTorch loop\n\n",
            "| labeled | epochs | batch | ladarun img/s | bare img/s | ratio | target | met "
            "|\n|---|---|---|---|---|---|---|---|\n",
            f"| {o['labeled']} | {o['epochs']} | {o['batch_size']} | "
            f"{o['ladarun_images_per_s']:.0f} | {o['bare_images_per_s']:.0f} "
            f"| {o['ratio']:.3f} | {o['target']} | {'yes' if o['met'] else 'NO'} |\n",
        ]
    if report.get("memory"):
        lines += [
            "\n### Peak memory per row (fresh process: the shared state, then one iteration)\n\n",
            "RSS before: after loading the data and building the state. Iteration peak: the peak RSS "
            "during the iteration alone (Linux VmHWM, reset after the state is built). Process peak: the "
            "whole process, data loading included.\n\n",
            "| row | RSS before MiB | iteration peak RSS MiB | iteration growth MiB | process "
            "peak RSS MiB | CUDA max allocated MiB |\n"
            "|---|---|---|---|---|---|\n",
        ]
        for m in report["memory"]:
            cuda = (
                f"{m['cuda_max_allocated_mib']:.0f}"
                if m.get("cuda_max_allocated_mib") is not None
                else "-"
            )
            it = m.get("iteration_peak_rss_mib")
            it_s, grow = (
                (f"{it:.0f}", f"{it - m['rss_before_mib']:+.0f}") if it is not None else ("-", "-")
            )
            lines.append(
                f"| {m['row']} | {m['rss_before_mib']:.0f} | {it_s} | {grow} | {m['peak_rss_mib']:.0f} | {cuda} |\n"
            )
    if report.get("estimator"):
        lines += [
            "\n### Look-ahead estimators (`augment.estimator`): acquisition time and the whole-iteration "
            "ratio to Random (interleaved, one process)\n\n",
            "Targets (issue 19): LADA_EntMix with `tabulated`: acquisition >= "
            f"{ESTIMATOR_TARGETS['acquire_speedup']:.0f}x faster than `mc`, whole iteration <= "
            f"{ESTIMATOR_TARGETS['ratio']:.1f}x Random.\n\n",
            "| row | estimator | acquire s (median) | acquire min s | acquisition speed-up vs mc | iteration s "
            "| Random iteration s | ratio to Random (median) | min-max |\n"
            "|---|---|---|---|---|---|---|---|---|\n",
        ]
        for e in report["estimator"]:
            lines.append(
                f"| {e['row']} | {e['estimator']} | {e['acquire_s']:.2f} | {e['acquire_min_s']:.2f} "
                f"| {e['acquire_speedup']:.2f}x | {e['iter_s']:.2f} | {e['random_iter_s']:.2f} "
                f"| {e['ratio_median']:.2f} | {e['ratio_min']:.2f}-{e['ratio_max']:.2f} |\n"
            )
    if report.get("note"):
        lines.append(f"\n{report['note']}\n")
    for key, title in (
        ("switches", "Speed switches on this device (quick protocol; interleaved)"),
        ("gpu", "GPU: seconds per paper-protocol iteration, per speed switch (interleaved)"),
    ):
        if report.get(key):
            lines += [
                f"\n### {title}\n\n| switches | row | s/iteration (median) | min | speed-up vs "
                "baseline |\n|---|---|---|---|---|\n"
            ]
            for g in report[key]:
                lines.append(
                    f"| {g['switches']} | {g['row']} | {g['iter_s']:.2f} | {g['min_s']:.2f} | {g['speedup']:.2f}x |\n"
                )
    md = out_dir / "bench.md"
    if not md.exists():
        md.write_text(
            "# Benchmarks\n\nAppended by `make bench` (`python benchmarks/run.py iteration`); newest last. "
            "Raw numbers in the bench-*.json files beside this one.\n"
        )
    with md.open("a") as f:
        f.writelines(lines)
    return md


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description="ladarun benchmarks (issue 7): Time column, loop overhead, memory, GPU"
    )
    parser.add_argument(
        "--sections",
        nargs="*",
        default=["time", "overhead", "memory", "switches", "estimator"],
        choices=["time", "overhead", "memory", "switches", "estimator", "gpu"],
    )
    parser.add_argument(
        "--note",
        default="",
        help="a line recorded under this entry in bench.md (e.g. the machine's load)",
    )
    parser.add_argument(
        "--rows", nargs="*", help="row labels to time (default: every implemented row)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--labeled", type=int, default=170, help="labeled-set size of the shared starting state"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--probe-memory", metavar="ROW", help=argparse.SUPPRESS)
    parser.add_argument(
        "base",
        nargs="*",
        help="config overrides of the shared setting (after --), "
        "default: dataset=fashion protocol=quick data_dir=$LADARUN_DATA or ../shared/data",
    )
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    data_dir = os.environ.get(
        "LADARUN_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    base = args.base or ["dataset=fashion", "protocol=quick", f"data_dir={data_dir}"]
    if args.probe_memory:
        row = next(r for r in implemented_rows() if r.label == args.probe_memory)
        print(json.dumps(memory_probe(base, row, args.labeled, device)))
        return
    rows = implemented_rows(args.rows)
    if "gpu" in args.sections and device.type != "cuda":
        sys.exit(
            "bench: the gpu section needs CUDA (device=cuda); CPU sections: time overhead memory switches"
        )
    report: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "machine": machine(),
        "device": str(device),
        "versions": library_versions(),
        "base": base,
        "labeled": args.labeled,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
    }
    print(f"bench: {report['machine']}; rows: {', '.join(r.label for r in rows)}", flush=True)
    if args.note:
        report["note"] = args.note
    if {"time", "overhead", "estimator"} & set(args.sections):
        bench = Bench(base, args.labeled, device)
        if "time" in args.sections:
            report["time"] = time_column(
                bench, rows, args.repeats, log=lambda s: print(s, flush=True)
            )
        if "overhead" in args.sections:
            report["overhead"] = loop_overhead(bench, epochs=10, repeats=max(args.repeats, 3))
            print(f"bench: loop overhead ratio {report['overhead']['ratio']:.3f}", flush=True)
        if "estimator" in args.sections:
            report["estimator"] = estimator_section(
                bench, args.repeats, log=lambda s: print(s, flush=True)
            )
    if "memory" in args.sections:
        report["memory"] = memory_column(base, rows, args.labeled, args.device)
    if "switches" in args.sections:
        report["switches"] = switch_section(
            base,
            args.labeled,
            device,
            args.repeats,
            GPU_SWITCHES if device.type == "cuda" else CPU_SWITCHES,
            log=lambda s: print(s, flush=True),
        )
    if "gpu" in args.sections:
        paper_base = [b for b in base if not b.startswith("protocol=")] + ["protocol=paper"]
        report["gpu"] = gpu_section(paper_base, max(args.labeled, 520), device, args.repeats)
    md = write_report(Path(args.out), report)
    print(f"bench: results appended to {md}", flush=True)


if __name__ == "__main__":
    main()
