"""Measure peak RSS of edgekit passes over a grid of (window, chunk), each in a fresh process,
next to the planner's estimate parts, and fit the planner's two factors to them.

    python scripts/measure_planner.py PKG [PKG ...] [--candidates 8] [--windows 1,2,3] [--chunks 1,4,8]

Candidates are demo-corpus lines joined until every sequence reaches the package's max length
(decoder packages) or 12 lines (encoders). Prints one JSON line per run and the least-squares
factors (RUNTIME_OVERHEAD_MB, SESSION_FACTOR for the weights part, ACTIVATION_FACTOR for the
activations part) that
runtimes/planner.py should carry; the fitted values there came from this script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, sys
import edgekit
from edgekit.demo import demo_corpus
from edgekit.measure import current_rss_mb, peak_rss_mb
from edgekit.runtimes import planner
package, window, chunk, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
corpus = demo_corpus()
candidates = [" ".join(corpus[(c + k) % len(corpus)] for k in range(12)) for c in range(count)]
selector = edgekit.load(package, window=window, chunk=chunk, threads=2)
process = current_rss_mb()
for _ in range(2):
    ranking = selector.rank(corpus[0], candidates, top_k=1)
lengths = [len(e.ids) for e in selector.encoder.encode_pairs(corpus[0], candidates)] \
    if selector.manifest.task == "rerank" else [len(e.ids) for e in selector.encoder.encode_texts(candidates + [corpus[0]])]
planner.RUNTIME_OVERHEAD_MB, planner.SESSION_FACTOR, planner.ACTIVATION_FACTOR = 0.0, 1.0, 1.0
parts = planner.estimate(selector.manifest, lengths, window, chunk, process)
print(json.dumps({"package": package, "window": window, "chunk": chunk, "peak_mb": peak_rss_mb(), "parts": parts}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--windows", default="1,2,3")
    parser.add_argument("--chunks", default="1,4,8")
    args = parser.parse_args()
    rows = []
    for package in args.packages:
        for window in (int(w) for w in args.windows.split(",")):
            for chunk in (int(c) for c in args.chunks.split(",")):
                out = subprocess.run([sys.executable, "-c", CHILD, package, str(window), str(chunk),
                                      str(args.candidates)], capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                print(json.dumps(row), flush=True)
                rows.append(row)
    # peak - process - states - sessions = c + a * weights + b * activations (parts at factor 1)
    matrix = np.array([[1.0, r["parts"]["weights"], r["parts"]["activations"]] for r in rows])
    target = np.array([r["peak_mb"] - r["parts"]["process"] - r["parts"]["states"] - r["parts"]["sessions"]
                       for r in rows])
    (overhead, session, activation), *_ = np.linalg.lstsq(matrix, target, rcond=None)
    fitted = matrix @ np.array([overhead, session, activation])
    worst = float(np.max((target - fitted) / np.maximum(target, 1)))
    # the smallest common scale-up of the fit that underestimates no measured run
    cover = float(np.max(target / np.maximum(fitted, 1e-9)))
    print(json.dumps({"RUNTIME_OVERHEAD_MB": round(float(overhead), 1), "SESSION_FACTOR": round(float(session), 2), "ACTIVATION_FACTOR": round(float(activation), 2),
                      "worst_underestimate_share": round(worst, 3), "scale_to_cover_all": round(cover, 3)}))


if __name__ == "__main__":
    main()
