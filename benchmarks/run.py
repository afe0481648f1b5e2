"""``make bench``: ladarun's benchmarks, one entry. Results are recorded in this folder.

    python benchmarks/run.py                 # all of them, as make bench runs them
    python benchmarks/run.py runs [...]      # whole runs: wall time and peak memory -> results.md
    python benchmarks/run.py iteration [...] # per iteration: Time column, overhead, memory, speed
                                             # switches, GPU -> bench.md and bench-<date>.json
    python benchmarks/run.py planning [...]  # planning experiment=table1's 270 jobs -> planning.md
    python benchmarks/run.py beyond [...]    # the rows beyond the paper against Random on
                                             # paper_budget -> beyond.md and beyond-<date>.json

``make bench BENCH_ARGS='--sections time'`` passes its arguments to ``iteration``. Run them
on an otherwise idle machine: on 2 cores any other job distorts every timing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import beyond  # noqa: E402  (sibling modules, found through the path set above)
import iteration  # noqa: E402
import planning  # noqa: E402
import whole_run  # noqa: E402


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["runs"]:
        whole_run.main(argv[1:])
    elif argv[:1] == ["iteration"]:
        iteration.main(argv[1:])
    elif argv[:1] == ["planning"]:
        planning.main(argv[1:])
    elif argv[:1] == ["beyond"]:
        beyond.main(argv[1:])
    else:
        whole_run.main([])
        planning.main([])
        iteration.main(argv)
        beyond.main([])


if __name__ == "__main__":
    main()
