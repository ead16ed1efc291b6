"""A backend that runs Core ML graphs with the MIL evaluator: the whole runtime over a package's
Core ML graphs, on Linux.

`predict` needs macOS; the numpy evaluator (mil_eval.py) does not. Behind the backend contract
(runtimes/backends/base.py) it lets the real Selector stream a package's mlpackage graphs, so the
export checks the chained Core ML graphs against the whole torch model, and the tests check that
a mixed package ranks the same through its Core ML graphs as through its ONNX ones. Export-side
only (coremltools imports torch): apps run Core ML graphs with the Core ML backend on macOS.

Example::

    from edgekit.runtimes.selector import Selector
    selector = Selector(manifest.for_format("mlpackage"), MilEvalBackend(), window=2, chunk=4)
    selector.rank(query, candidates, top_k=10)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.exporters.coreml.mil_eval import MilProgram
from edgekit.runtimes.backends.base import BackendTraits


class MilEvalSession:
    """One mlprogram under the evaluator; feeds are cast to the declared dtypes (the runtime feeds
    int64 ids and masks, Core ML declares int32), extra feeds are ignored (the Session contract)."""

    def __init__(self, path: Path) -> None:
        self.program: MilProgram | None = MilProgram(path)
        self.input_names = tuple(self.program.inputs)
        self.output_names = tuple(self.program.outputs)

    def run(self, feeds: dict[str, np.ndarray], shrink_arena: bool = False) -> list[np.ndarray]:
        if self.program is None:
            raise RuntimeError("this Core ML evaluator session was released")
        cast = {name: np.asarray(feeds[name]).astype(np.int32 if integer else np.float32)
                for name, (_, integer) in self.program.inputs.items()}
        outputs = self.program.run(cast)
        return [outputs[name] for name in self.output_names]

    def release(self) -> None:
        self.program = None


class MilEvalBackend:
    """Loads mlpackage graphs as evaluator sessions (provider "mil-eval", copies weights)."""

    traits = BackendTraits(runtime_overhead_mb=0.0, weights="copy")
    provider = "mil-eval"

    def load(self, path: Path) -> MilEvalSession:
        return MilEvalSession(Path(path))
