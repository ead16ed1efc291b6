"""Story: the runtime reaches graphs only through the backend contract. Only runtimes/backends/
and exporters/ import onnxruntime; a made-up graph format with a numpy backend registered ranks
a real package end to end (selector, layer stream, chunked feeds, planner traits, releases);
asking for a format or provider nobody has is a typed one-line error."""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import FormatVersionError, InvalidArgumentError, ProviderUnavailableError
from edgekit.manifest import GraphSpec, Manifest
from edgekit.runtimes import planner
from edgekit.runtimes.backends import backend_for, register_backend, unregister_backend
from edgekit.runtimes.backends.base import BackendTraits
from edgekit.runtimes.selector import Selector
from edgekit.runtimes.text import TextEncoder
from tests.conftest import CANDIDATES, QUERY

REPO = Path(__file__).resolve().parents[1]
MAY_IMPORT_ORT = ("runtimes/backends/", "exporters/")  # scripts/, tests/, edgekit/ and the rest may not
# probes that measure onnxruntime's own mechanisms (not the backend contract) and say so
PROBES_OF_ORT = ("scripts/probe_shared_sessions.py", "scripts/probe_prepacking.py", "scripts/probe_wan_decode.py")
ORT_NAMES = {"OrtBackend", "OrtSession"}


def _python_files() -> Iterator[Path]:
    """Every .py file of the repository, once (edgekit/runtimes etc. are symlinks: not followed)."""
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules")]
        for name in files:
            if name.endswith(".py"):
                yield Path(folder) / name


def _ort_uses(path: Path) -> list[str]:
    """`import onnxruntime…` / `from onnxruntime… import` lines and OrtBackend/OrtSession names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] == "onnxruntime"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "onnxruntime":
            found.append(f"{node.lineno}: from {node.module} import …")
        elif isinstance(node, ast.ImportFrom):
            found += [f"{node.lineno}: imports {a.name}" for a in node.names if a.name in ORT_NAMES]
        elif isinstance(node, ast.Name) and node.id in ORT_NAMES:
            found.append(f"{node.lineno}: names {node.id}")
    return found


def test_only_backends_and_exporters_import_onnxruntime() -> None:
    uses = {path.relative_to(REPO).as_posix(): _ort_uses(path) for path in _python_files()}
    # the scan sees imports at all: the onnxruntime backend itself is found
    assert any("import onnxruntime" in line for line in uses["runtimes/backends/onnxruntime_backend.py"])
    offenders = {path: lines for path, lines in uses.items()
                 if lines and not path.startswith(MAY_IMPORT_ORT) and path not in PROBES_OF_ORT}
    assert offenders == {}, "use edgekit.runtimes.backends.backend_for / Backend / Session instead"


# --- a made-up format, executed by numpy -----------------------------------------------------
class NumpySession:
    """Stands in for a graph by its role: embeddings put each token id in every channel, a layer
    adds 1, the head averages channel 0 over the real tokens (so score = mean id + layers)."""

    def __init__(self, graph: GraphSpec, hidden_size: int, log: list[str]) -> None:
        self.graph, self.hidden_size, self.log = graph, hidden_size, log
        self.input_names = tuple(spec.name for spec in graph.inputs)
        self.output_names = tuple(spec.name for spec in graph.outputs)
        self.released = False

    def run(self, feeds: dict[str, np.ndarray], shrink_arena: bool = False) -> list[np.ndarray]:
        assert not self.released, f"{self.graph.name} ran after release"
        missing = set(self.input_names) - set(feeds)
        assert not missing, f"{self.graph.name} was not fed {missing}"
        mask = feeds["attention_mask"].astype(np.float32)
        if self.graph.role == "embeddings":
            ids = feeds["input_ids"].astype(np.float32)
            return [np.repeat(ids[..., None], self.hidden_size, axis=-1)]
        if self.graph.role == "layer":
            return [feeds["hidden_states"] + np.float32(1)]
        first = feeds["hidden_states"][..., 0]
        return [(first * mask).sum(axis=1) / mask.sum(axis=1)]

    def release(self) -> None:
        self.released = True
        self.log.append(f"release {self.graph.name}")


class NumpyBackend:
    traits = BackendTraits(runtime_overhead_mb=7.0, weights="copy")

    def __init__(self, manifest: Manifest, provider: str) -> None:
        self.provider = provider
        self.graphs = {manifest.root / graph.path: graph for graph in manifest.graphs}
        self.hidden_size = manifest.ranking.hidden_size
        self.log: list[str] = []

    def load(self, path: Path) -> NumpySession:
        self.log.append(f"load {self.graphs[path].name}")
        return NumpySession(self.graphs[path], self.hidden_size, self.log)


@pytest.fixture
def numpy_format(tiny_cross_package: Path) -> Iterator[Manifest]:
    manifest = Manifest.load(tiny_cross_package)
    register_backend("numpy-test", ("cpu",), lambda provider, threads, tuned: NumpyBackend(manifest, provider))
    yield manifest
    unregister_backend("numpy-test")


def test_a_registered_backend_runs_a_package_through_the_contract(numpy_format: Manifest) -> None:
    backend = backend_for("numpy-test", "cpu")
    ranking = Selector(numpy_format, backend, window=2, chunk=3).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))

    encoded = TextEncoder(numpy_format).encode_pairs(QUERY, CANDIDATES)
    expected = [float(np.mean(item.ids)) + numpy_format.ranking.num_layers for item in encoded]
    assert {r.index: r.score for r in ranking} == pytest.approx(dict(enumerate(expected)))
    assert [r.index for r in ranking] == sorted(range(len(expected)), key=lambda i: (-expected[i], i))
    loaded = sorted(entry.split()[1] for entry in backend.log if entry.startswith("load"))
    released = sorted(entry.split()[1] for entry in backend.log if entry.startswith("release"))
    assert loaded == released == sorted(graph.name for graph in numpy_format.stream_graphs)
    assert ranking.stats.provider == "cpu" and ranking.stats.max_resident_graphs <= 2


def test_the_planner_reads_the_backends_traits(numpy_format: Manifest) -> None:
    ranking = Selector(numpy_format, backend_for("numpy-test", "cpu"), memory_budget_mb=100_000).rank(
        QUERY, CANDIDATES, top_k=2)
    assert ranking.stats.plan["parts_mb"]["runtime"] == 7.0
    lengths = [len(item.ids) for item in TextEncoder(numpy_format).encode_pairs(QUERY, CANDIDATES)]
    mapped = planner.estimate(numpy_format, lengths, 2, 4, 100.0)
    copied = planner.estimate(numpy_format, lengths, 2, 4, 100.0, traits=NumpyBackend.traits)
    assert copied["weights"] > mapped["weights"] and copied["sessions"] >= mapped["sessions"]
    # onnxruntime's traits are the figures the planner was fitted with
    onnx = backend_for("onnx", "cpu").traits
    assert (onnx.weights, onnx.runtime_overhead_mb) == ("mmap", planner.RUNTIME_OVERHEAD_MB)
    assert planner.estimate(numpy_format, lengths, 2, 4, 100.0, traits=onnx) == mapped


def test_onnxruntime_defaults_score_like_edgekits_options(tiny_cross_package: Path) -> None:
    manifest = Manifest.load(tiny_cross_package)
    tuned = Selector(manifest, backend_for("onnx", "cpu", 1)).rank(QUERY, CANDIDATES, top_k=3)
    stock = Selector(manifest, backend_for("onnx", "cpu", 1, tuned=False)).rank(QUERY, CANDIDATES, top_k=3)
    assert [r.index for r in stock] == [r.index for r in tuned]
    assert [r.score for r in stock] == pytest.approx([r.score for r in tuned], abs=1e-5)


# --- what nobody has -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "graph_format, provider, error, needles",
    [("mlpackage", "cpu", InvalidArgumentError, ("'cpu'", "mlpackage graphs", "choose one of coreml")),
     ("tflite", "cpu", FormatVersionError, ("'tflite'", "this runtime has:", "onnx", "re-export")),
     ("onnx", "tpu", InvalidArgumentError, ("'tpu'", "cpu, cuda, coreml")),
     ("numpy-test", "cuda", InvalidArgumentError, ("'cuda'", "numpy-test", "choose one of cpu"))],
)
def test_unknown_format_or_provider_is_a_typed_one_line_error(numpy_format: Manifest, graph_format: str,
                                                               provider: str, error: type[Exception],
                                                               needles: tuple[str, ...]) -> None:
    with pytest.raises(error) as raised:
        backend_for(graph_format, provider)
    message = str(raised.value)
    assert "\n" not in message and all(needle in message for needle in needles), message


def test_a_provider_this_machine_lacks_is_an_error_not_a_fallback() -> None:
    try:
        backend_for("onnx", "coreml")
    except ProviderUnavailableError as error:
        assert "CoreMLExecutionProvider" in str(error) and "\n" not in str(error)
    else:
        pytest.skip("this machine has the Core ML provider")
