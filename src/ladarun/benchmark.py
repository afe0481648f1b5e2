"""Moved: ladarun's benchmarks are developer tooling and left the package (``benchmarks/``)."""

import sys


def main() -> None:
    sys.exit(
        "ladarun: error: `python -m ladarun.benchmark` moved to `python benchmarks/run.py iteration` "
        "(same options, run from a checkout); `make bench` runs every benchmark"
    )


if __name__ == "__main__":
    main()
