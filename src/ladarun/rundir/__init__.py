"""Everything a run writes into its folder and reads back to resume, in one place.

- files.py: the folder's file names, atomic writes, JSON reads;
- metrics.py: ``metrics.csv``, one row per iteration;
- queries.py: ``queries.csv``, one row per labeled point;
- checkpoint.py: ``checkpoint.pt`` and every random stream;
- state.py: :class:`RunState`, where a run stands between iterations;
- lock.py: ``run.lock``, one process per folder;
- identity.py: the folder a run's settings name, and the guard against another config's results;
- trackers.py: TensorBoard and MLflow beside metrics.csv;
- summary.py: ``summary.json``, written last;
- run.py: :class:`RunDir`, what the loop calls.

Importing this package stays light (no torch): the launchers and reports read run folders
without starting torch. The loop imports ``ladarun.rundir.run``.
"""

from .files import CHECKPOINT, FAILURE, LOCK, METRICS, QUERIES, RUN_CONFIG, SUMMARY

__all__ = ["CHECKPOINT", "FAILURE", "LOCK", "METRICS", "QUERIES", "RUN_CONFIG", "SUMMARY"]
