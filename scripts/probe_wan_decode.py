"""How much memory does Wan's causal VAE decode take, streamed vs as one graph? (issue 16, the
decode-peak reading in docs/BENCHMARKS.md)

    python scripts/probe_wan_decode.py [ROOT]     # ROOT: the bench's mid-wan folder (default below)

ROOT holds `package/` (an exported Wan package) and `monolithic-decoder-t3/` (the whole decoder as
one graph for 3 latent frames), as `edgekit bench video --family wan` leaves them. Each
configuration decodes the same de-normalised latents [1, 16, 3, 16, 16] in its own process, the
resident-set high-water mark reset just before it loads anything:

  whole        the one-graph decoder (diffusers' frame loop unrolled at export), onnxruntime defaults
  streamed-1   edgekit's WanDecoder: the first-chunk graph, then one latent frame per call
  streamed-2   the same, two latent frames per call after the first

It prints the process's resident set before loading, the peak, and the decode time. It imports
onnxruntime itself (onnxruntime defaults for the whole graph): tests/test_backend_contract.py
lists it in PROBES_OF_ORT.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DEFAULT_ROOT = Path.home() / ".cache" / "edgekit" / "bench" / "video-wan" / "mid-wan"

CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np
from edgekit.manifest import Manifest
from edgekit.measure import current_rss_mb, peak_rss_mb
root, mode = Path(sys.argv[1]), sys.argv[2]
manifest = Manifest.load(root / "package")
wan = manifest.video.wan
mean = np.asarray(wan.latents_mean, np.float32).reshape(1, -1, 1, 1, 1)
std = np.asarray(wan.latents_std, np.float32).reshape(1, -1, 1, 1, 1)
latents = (np.random.default_rng(0).standard_normal((1, 16, 3, 16, 16)).astype(np.float32) * std + mean)
open("/proc/self/clear_refs", "w").write("5")
start = current_rss_mb()
began = time.perf_counter()
if mode == "whole":
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(root / "monolithic-decoder-t3" / "graphs" / "vae_decoder_whole.onnx"), options)
    frames = session.run(None, {session.get_inputs()[0].name: latents})[0]
else:
    from edgekit.runtimes.backends import backend_for
    from edgekit.runtimes.video.wan_decode import WanDecoder
    decoder = WanDecoder(manifest.graph("vae_decoder_first"), manifest.graph("vae_decoder_next"), manifest.root,
                         backend_for("onnx", "cpu", 2).load)
    frames = decoder.decode(latents, chunk=int(mode.split("-")[1]))
print(json.dumps({"mode": mode, "start_mb": round(start), "peak_mb": round(peak_rss_mb()),
                  "ms": round((time.perf_counter() - began) * 1000), "frames": list(frames.shape)}))
"""


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ROOT
    for mode in ("whole", "streamed-1", "streamed-2"):
        result = subprocess.run([sys.executable, "-c", CHILD, str(root), mode], capture_output=True, text=True,
                                check=True)
        row = json.loads(result.stdout.strip().splitlines()[-1])
        row["above_start_mb"] = row["peak_mb"] - row["start_mb"]
        print(json.dumps(row))


if __name__ == "__main__":
    main()
