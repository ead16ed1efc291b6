"""Checks that a loaded session is the graph its manifest entry describes, by its IO names.

The manifest check (edgekit/manifest.py) vouches for the entries; nothing there proves that the
file an entry points at is the graph it claims to be. An entry whose path and files were swapped
with another graph's (the embeddings graph in a layer slot) passes every manifest check and then
fails mid-run with a KeyError deep in the runtime. So every session is checked right after it is
created: its input names must be the entry's inputs (as a set: inputs are fed by name) and its
output names the entry's outputs in order (outputs are consumed by position). A mismatch
releases the session and raises a one-line IntegrityError naming the graph.

`CheckedBackend` wraps any Backend (runtimes/backends/base.py) so callers keep calling
`backend.load(path)`; it holds no mutable state, so the layer stream's prefetch thread may call
it concurrently.

Example::

    backend = CheckedBackend(backend_for("onnx", "cpu"), manifest)
    session = backend.load(manifest.root / manifest.graph("layer", 0).path)   # checked
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import IntegrityError
from edgekit.manifest import GraphSpec, Manifest
from edgekit.manifest_fields import shown
from edgekit.runtimes.backends.base import Backend, BackendTraits, Session


def check_session_io(graph: GraphSpec, session: Session) -> None:
    """Raise IntegrityError unless `session`'s IO names are `graph`'s (inputs as a set, outputs
    in order). A shared layer graph's inputs are its feeds and its weight tensors."""
    inputs, outputs = tuple(session.input_names), tuple(session.output_names)
    expected_in = (*(spec.name for spec in graph.inputs), *graph.weight_names)
    expected_out = tuple(spec.name for spec in graph.outputs)
    if set(inputs) != set(expected_in) or len(inputs) != len(expected_in) or outputs != expected_out:
        raise IntegrityError(
            f"graph {graph.name!r} ({graph.path}) takes {_names(inputs)} -> {_names(outputs)}, its manifest entry "
            f"says {_names(expected_in)} -> {_names(expected_out)}: the file is not the graph its entry describes; "
            "run `edgekit verify` and re-export the package", [graph.path])


def _names(names: tuple[str, ...]) -> str:
    """Tensor names for a one-line message (escaped: names inside a graph file are untrusted)."""
    return shown(", ".join(names), 60)


class CheckedBackend:
    """A Backend whose every session is checked against the manifest entry of the path it loads
    (`check_session_io`; a shared layer graph against its first layer's entry, which the manifest
    check holds equal to every other layer's). Loading a path that is no graph of the manifest is
    a caller bug (KeyError)."""

    def __init__(self, backend: Backend, manifest: Manifest) -> None:
        self.inner = backend
        self.manifest = manifest
        self._graphs: dict[Path, GraphSpec] | None = None  # by loaded path, built on the first load

    @property
    def provider(self) -> str:
        return self.inner.provider

    @property
    def traits(self) -> BackendTraits:
        return self.inner.traits

    def load(self, path: Path) -> Session:
        if self._graphs is None:  # once; two threads building it at once build the same dict
            graphs: dict[Path, GraphSpec] = {}
            for spec in self.manifest.graphs:
                graphs.setdefault(self.manifest.root / spec.path, spec)  # shared layers: the first layer's entry
            self._graphs = graphs
        graph = self._graphs.get(Path(path))
        if graph is None:
            raise KeyError(f"{path} is no graph of the package at {self.manifest.root}")
        session = self.inner.load(path)
        try:
            check_session_io(graph, session)
        except IntegrityError:
            session.release()
            raise
        return session


def checked_backend(backend: Backend, manifest: Manifest) -> Backend:
    """`backend` wrapped in a CheckedBackend for `manifest` (a CheckedBackend is not wrapped twice)."""
    return CheckedBackend(backend.inner if isinstance(backend, CheckedBackend) else backend, manifest)
