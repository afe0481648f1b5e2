"""Planning a sweep before any of its jobs runs: each job's run directory, and what happens to it.

ladarun's sweeper checks that every job composes, and its launchers (slurm, submitit_local,
local) compose every job's config before anything runs: the run directory comes from it, and a
finished run is left out instead of started only to skip itself. Hydra composes one config in
about 0.1 s, so composing each of experiment=table1's 270 jobs twice took minutes. A job's config
is Hydra's composition of the options it chooses (method=ent dataset=svhn: the defaults list),
then its plain values applied on top (seed=3), in that order; jobs choosing the same options
differ only in those values. JobConfigs asks Hydra once per distinct choice of options and
applies each job's values with OmegaConf.update, as Hydra's composition does. Any other
override (``+key=``, ``~key``, ``hydra.*``, a dict or list value) counts as a choice of options;
a job whose value does not replace a plain value, and every job of a sweep whose run directory
is named by ``override_dirname`` or the ``hydra:`` resolver, is composed by Hydra whole.
"""

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, TypeVar

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ladarun.launchers import PlannedJob, plan_job, plan_summary, run_resources

log = logging.getLogger(__name__)
T = TypeVar("T")
_ABSENT = object()


@dataclass
class JobFacts:
    """What planning needs of one job's config."""

    run_dir: Path
    protocol: str
    config: Optional[dict[str, Any]]  # resolved, without hydra; read only where run_dir exists


def progress(items: Sequence[T], what: str) -> Iterator[T]:
    """``items`` with a tqdm bar on a terminal (nothing in a log file or a pipe)."""
    from tqdm import tqdm

    return iter(tqdm(items, desc=what, unit="job", disable=None, leave=False, file=sys.stderr))


class JobConfigs:
    """Every job's config as Hydra would compose it, one Hydra composition per choice of options."""

    def __init__(self, loader: ConfigLoader, master: DictConfig) -> None:
        self.loader, self.master = loader, master
        self.groups = set(master.hydra.runtime.choices) | set(loader.list_groups(""))
        templates = str(OmegaConf.to_container(master.hydra.sweep, resolve=False))
        # Hydra's per-job fields other than the overrides themselves name the run directory.
        self.whole = "override_dirname" in templates or "hydra:" in templates
        # Per choice of options: Hydra's composition, its unresolved values, and the original
        # values of the keys a job has changed since (put back when a job leaves them alone).
        self.bases: dict[tuple[str, ...], tuple[DictConfig, dict, dict[str, Any]]] = {}
        self.facts: dict[tuple[str, ...], JobFacts] = {}
        self.parser = OverridesParser.create()
        self.parsed: dict[str, Override] = {}  # the jobs of a sweep share most overrides

    def __call__(self, overrides: Sequence[str]) -> JobFacts:
        key = tuple(overrides)
        if key not in self.facts:
            self.facts[key] = self._facts(list(overrides))
        return self.facts[key]

    def _facts(self, overrides: list[str]) -> JobFacts:
        for o in overrides:
            if o not in self.parsed:
                self.parsed[o] = self.parser.parse_overrides([o])[0]
        parsed = [self.parsed[o] for o in overrides]
        values = [o for o in parsed if self._is_value(o)]
        choices = tuple(o.input_line or "" for o in parsed if not self._is_value(o))
        facts = None if self.whole else self._patched(choices, values, overrides)
        return facts or read_facts(self.loader.load_sweep_config(self.master, overrides))

    def _is_value(self, o: Override) -> bool:
        """A plain ``key=value`` on a config value (not a config group, not Hydra's own)."""
        return (
            o.type == OverrideType.CHANGE
            and o.package is None
            and not o.is_hydra_override()
            and "/" not in o.key_or_group
            and o.key_or_group not in self.groups
            and _scalar(o.value())
        )

    def _patched(
        self, choices: tuple[str, ...], values: list[Override], overrides: list[str]
    ) -> Optional[JobFacts]:
        """The facts of the composition of ``choices`` with ``values`` applied; None where
        a value does not replace a plain value of it (Hydra composes that job and says why)."""
        if choices not in self.bases:
            cfg = self.loader.load_sweep_config(self.master, list(choices))
            raw = OmegaConf.to_container(cfg, resolve=False)
            self.bases[choices] = (cfg, raw, {})  # type: ignore[assignment]
        cfg, raw, changed = self.bases[choices]
        keys = [o.key_or_group for o in values]
        if not all(_scalar(_at(raw, key)) for key in keys):
            return None
        try:
            for key in [k for k in changed if k not in keys]:
                OmegaConf.update(cfg, key, changed.pop(key), merge=False)
            for key, o in zip(keys, values):
                changed.setdefault(key, _at(raw, key))
                OmegaConf.update(cfg, key, o.value(), merge=True)
            cfg.hydra.overrides.task = overrides
            return read_facts(cfg)
        except OmegaConfBaseException:
            return None


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _at(tree: Any, key: str) -> Any:
    """The unresolved value at dotted ``key`` of a plain container, or _ABSENT."""
    for part in key.split("."):
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and part.isdigit() and int(part) < len(tree):
            tree = tree[int(part)]
        else:
            return _ABSENT
    return tree


def read_facts(cfg: DictConfig) -> JobFacts:
    run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    config = None
    if run_dir.exists():
        items = ((k, cfg[k]) for k in cfg if k != "hydra")
        config = {
            str(k): OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in items
        }
    return JobFacts(run_dir, str(OmegaConf.select(cfg, "protocol.name", default="")), config)


_cache: list[JobConfigs] = []


def job_configs(loader: ConfigLoader, master: DictConfig) -> JobConfigs:
    """The sweep's JobConfigs, shared by the sweeper's check and the launcher's plan."""
    if not _cache or _cache[0].master is not master or _cache[0].loader is not loader:
        _cache[:] = [JobConfigs(loader, master)]
    return _cache[0]


class Planning:
    """What ladarun's launchers share: every job planned before any runs (see the module)."""

    config: Optional[DictConfig]
    hydra_context: Any
    params: dict[str, Any]
    resource_table: dict[str, Any] = {}
    dry_run = False
    verbs = (
        "Running",
        "run",
    )  # the plan's summary: "Running 3 of 270 run(s) ...", "Nothing to run"

    def plan(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[PlannedJob]:
        """Every job's run directory, resources and fate, with a progress bar on a terminal."""
        assert self.hydra_context is not None and self.config is not None
        configs = job_configs(self.hydra_context.config_loader, self.config)
        log.info("Planning %d job(s): what each run directory holds", len(job_overrides))
        jobs = []
        for i, overrides in enumerate(progress(job_overrides, "planning")):
            facts = configs(overrides)
            resources = run_resources(self.params, self.resource_table, facts.protocol)
            job = PlannedJob(initial_job_idx + i, list(overrides), facts.run_dir, resources)
            jobs.append(plan_job(job, facts.config))
        left_out = [] if self.dry_run else [j for j in jobs if not j.to_run]  # a dry run lists all
        for j in left_out:
            log.info("\t#%d : %s: %s; left out", j.idx, j.label, j.note)
        log.info(plan_summary(jobs, *self.verbs))
        return jobs

    def returns(
        self, jobs: Iterable[PlannedJob], ran: dict[int, JobReturn], dry_run: bool = False
    ) -> list[JobReturn]:
        """Every job's JobReturn: those that ran, then the plan's answer for the others (a
        finished run's best accuracy, the reason a run was left out)."""
        assert self.config is not None
        out = []
        for j in jobs:
            if j.idx in ran:
                out.append(ran[j.idx])
                continue
            failed = j.error is not None and not dry_run
            out.append(
                JobReturn(
                    overrides=j.overrides,
                    hydra_cfg=OmegaConf.create(
                        {"hydra": {"runtime": {"output_dir": os.path.abspath(j.run_dir)}}}
                    ),
                    working_dir=os.getcwd(),
                    task_name=str(self.config.hydra.job.name),
                    status=JobStatus.FAILED if failed else JobStatus.COMPLETED,
                    _return_value=j.error if failed else j.best,
                )
            )
        return out
