"""`python scripts/bench_spine.py [options]`: the spine benchmark, kept for the command lines in
docs/BENCHMARKS.md; the benchmark lives in edgekit/bench/spine.py (also `edgekit bench spine`).
Defaults (cache, JSON, markdown) are relative to the repository root, as before."""

from pathlib import Path

from edgekit.bench.spine import main

if __name__ == "__main__":
    main(root=Path(__file__).resolve().parent.parent)
