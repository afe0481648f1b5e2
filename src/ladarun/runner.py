"""Run one composed configuration: check it, hold its folder, run the loop, report the result.

The CLI (cli.py) and the Python API (api.py) both call :func:`run_from_config`; it works on any
config composed from ladarun's (Hydra's compose API too). torch and the domain code are imported
only when a run goes ahead, so checking, skipping and refusing stay fast.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Optional, Sequence, cast

from omegaconf import DictConfig, OmegaConf

from .config import Parts, check_settings
from .rundir.files import (
    CHECKPOINT,
    FAILURE,
    METRICS,
    RUN_CONFIG,
    os_errors_in_one_line,
    refuse_links,
    write_config_files,
    write_json_atomic,
)
from .rundir.identity import check_existing, run_fingerprint
from .rundir.lock import run_lock

log = logging.getLogger("ladarun")


def run_from_config(
    cfg: DictConfig,
    out_dir: Path | str,
    sweep_dir: Optional[Path] = None,
    overrides: Optional[Sequence[str]] = None,
) -> float:
    """Build dataset, model, acquisition, augmentation and protocol from ``cfg`` and run them in
    ``out_dir``; returns the best accuracy.

    Settings are checked first (config.check_settings), before anything is written. A finished
    run of the same config in ``out_dir`` is skipped; an unfinished one with a checkpoint resumes
    after its last finished iteration. Only one process at a time runs a directory: a second one
    stops at once (RunLockedError). ``sweep_dir``: the sweep folder of ``ladarun -m``, where
    trackers keep their shared stores (one MLflow experiment per sweep). ``overrides``: the
    command line's, recorded in ``.hydra/overrides.yaml`` beside the config.
    """
    parts = check_settings(cfg)
    out_dir = Path(out_dir)
    with os_errors_in_one_line(), run_lock(out_dir):
        refuse_links(out_dir)
        # A DictConfig gives a dict.
        config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
        done, fingerprint = _guard(out_dir, config)
        if done is not None:
            log.info(
                "Run in %s is already finished (best accuracy %.2f%%); skipping it.", out_dir, done
            )
            return done
        _prepare(out_dir, config, bool(cfg.checkpoint))
        listed = None if overrides is None else OmegaConf.to_yaml(OmegaConf.create(list(overrides)))
        write_config_files(out_dir, OmegaConf.to_yaml(cfg), listed)
        try:
            from .loop import run_active_learning  # torch: only for a run that goes ahead

            experiment, options = _experiment(cfg, out_dir, parts, fingerprint, sweep_dir)
            summary = run_active_learning(experiment, out_dir, parts.device, options)
        except Exception as err:
            _record_failure(out_dir / FAILURE, err)
            raise
    log.info("metrics: %s", summary.metrics_path)
    log.info(
        "best accuracy %.2f%%, final %.2f%% with %d labels after %d iterations; %.1f s on %s",
        summary.best_acc,
        summary.final_acc,
        summary.n_labeled,
        summary.iterations,
        summary.total_s,
        summary.device,
    )
    return summary.best_acc


def _guard(out_dir: Path, config: dict[str, Any]) -> tuple[Optional[float], str]:
    """The best accuracy of a finished run of this config in ``out_dir`` (None: run it), and the
    fingerprint its checkpoint is saved and checked with. Raises on another config's results."""

    @functools.cache  # check_existing and run_fingerprint both ask; the conf files are read once
    def defaults() -> dict[str, Any]:  # only read when the folder holds an earlier run
        from .report.runs import default_config

        return default_config(config)

    done = check_existing(out_dir, config, defaults)
    # Before run_config.json is rewritten: an earlier run's checkpoint is checked against it.
    return done, (run_fingerprint(out_dir, config, defaults) if done is None else "")


def _prepare(out_dir: Path, config: dict[str, Any], checkpoint: bool) -> None:
    """Clear the last failure and record the config; a resumed run keeps the config it started
    with (its checkpoint's fingerprint)."""
    resumes = checkpoint and (out_dir / CHECKPOINT).exists()
    if (out_dir / METRICS).exists() and not resumes:
        log.warning(
            "%s holds an unfinished run without a checkpoint; starting it again from the beginning.",
            out_dir,
        )
    (out_dir / FAILURE).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (resumes and (out_dir / RUN_CONFIG).exists()):
        write_json_atomic(out_dir / RUN_CONFIG, config)


def _experiment(
    cfg: DictConfig, out_dir: Path, parts: Parts, fingerprint: str, sweep_dir: Optional[Path]
) -> tuple[Any, Any]:
    """Read the data: the loop's Experiment and RunOptions for ``cfg``."""
    from .loop import Experiment, RunOptions
    from .runtime import SpeedOptions, use_slurm_threads

    use_slurm_threads()  # a Slurm task runs as many threads as it has CPUs
    data = parts.source.load(cfg.data_dir, parts.device)
    log.info(
        "dataset=%s (%d train, %d test) model=%s acquisition=%s augment=%s protocol=%s seed=%d device=%s",
        cfg.dataset.name,
        data.y_train.numel(),
        data.y_test.numel(),
        cfg.model.name,
        cfg.acquisition.name,
        cfg.augment.name,
        cfg.protocol.name,
        cfg.seed,
        parts.device,
    )
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    options = RunOptions(
        deterministic=cfg.deterministic,
        progress=cfg.progress,
        checkpoint=cfg.checkpoint,
        keep_checkpoint=cfg.keep_checkpoint,
        fingerprint=fingerprint,
        speed=SpeedOptions(**config["speed"]),
        run_info={"config": config},
        loggers=parts.loggers,
        log_root=sweep_dir if sweep_dir is not None else out_dir,
        experiment=Path(sweep_dir).resolve().name if sweep_dir is not None else "ladarun",
    )
    experiment = Experiment(
        data=data,
        model_factory=parts.model_factory,
        acquisition=parts.acquisition,
        protocol=parts.protocol,
        seed=cfg.seed,
        augment=parts.augment,
        optimizer=parts.optimizer,
        scheduler=parts.scheduler,
    )
    return experiment, options


def _record_failure(path: Path, err: BaseException) -> None:
    """failed.json for the table; on a full disk it may not fit, and the error says so already."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"error": type(err).__name__, "message": str(err)})
    except OSError:
        pass
