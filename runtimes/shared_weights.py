"""Shared layers at run time: one session of the shared graph, each layer's weights memory-mapped
from its own file and fed as the graph's weight inputs (docs/FORMAT.md, "Shared layers").

`MappedWeights` maps one layer's weights file read-only and views each tensor of its manifest
entry in place (no copy). `prefetch()` asks the kernel to read the file ahead (MADV_WILLNEED):
the pages enter the page cache on the prefetch thread while the previous layer computes, and
become this process's resident memory only when the layer's run reads them. `close()` unmaps
them. `SharedLayerSession` is a Session (runtimes/backends/base.py) made of the shared graph's
session and one layer's MappedWeights: its `input_names` are the layer's runtime feeds, `run`
adds the weights, `release` unmaps the weights and leaves the shared session open for the next
layer (whoever created it releases it). So LayerStream streams *weights*, W layers mapped at once,
and no backend learns about shared layers.

Example::

    shared = backend.load(root / graph.path)       # once: every layer entry has the same path
    session = SharedLayerSession(shared, graph, MappedWeights(root, graph))
    hidden = session.run({"hidden_states": h, "attention_mask": m})[0]
    session.release()                              # unmaps this layer's weights only
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from edgekit.errors import IntegrityError
from edgekit.package_files import GraphSpec
from edgekit.runtimes.backends.base import Session

# manifest dtype -> numpy (little-endian, as the weights file stores it); bfloat16 has no numpy type
NUMPY_DTYPES = {"float32": "<f4", "float16": "<f2", "float64": "<f8", "int64": "<i8", "int32": "<i4", "int16": "<i2",
                "int8": "i1", "uint8": "u1", "bool": "?"}


class MappedWeights:
    """One layer's weights (`graph.weights`), memory-mapped read-only from its file under `root`.

    Raises IntegrityError when the file's size is not the one its manifest entry records (a map
    past the end of a shorter file would fault when read) or a tensor's dtype has no numpy type.
    """

    def __init__(self, root: Path, graph: GraphSpec) -> None:
        weights = graph.weights
        if weights is None:
            raise ValueError(f"graph {graph.name!r} has no weights file")
        entry = graph.weights_entry
        path = root / weights.file
        self.arrays: dict[str, np.ndarray] = {}
        self._map: mmap.mmap | None = None
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            size = os.fstat(descriptor).st_size
            if size != entry.bytes:
                raise IntegrityError(f"{weights.file} has {size} bytes, the manifest says {entry.bytes}; run "
                                     "`edgekit verify` and re-export the package", [weights.file])
            if size:
                self._map = mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(descriptor)
        for tensor in weights.tensors:
            if tensor.dtype not in NUMPY_DTYPES:
                self.close()
                raise IntegrityError(f"{weights.file}: tensor {tensor.name!r} is {tensor.dtype}, which this runtime "
                                     "cannot feed; re-export the package without --shared-layers", [weights.file])
            dtype = np.dtype(NUMPY_DTYPES[tensor.dtype])
            source = self._map if self._map is not None else b""
            self.arrays[tensor.name] = np.frombuffer(source, dtype=dtype, count=tensor.elements,
                                                     offset=tensor.offset).reshape(tensor.shape)

    def prefetch(self) -> None:
        """Ask the kernel to read the whole file ahead, asynchronously (a hint; no-op where
        madvise is missing)."""
        if self._map is not None and hasattr(mmap, "MADV_WILLNEED"):
            self._map.madvise(mmap.MADV_WILLNEED)

    def close(self) -> None:
        """Drop the views and unmap the file. A view someone still holds keeps the map alive until
        it is gone (then the garbage collector unmaps it)."""
        self.arrays = {}
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass
            self._map = None


class SharedLayerSession:
    """One layer of a shared-layers package as a Session: the shared graph's session plus this
    layer's mapped weights. `input_names` are the layer's runtime feeds (its manifest inputs)."""

    def __init__(self, shared: Session, graph: GraphSpec, weights: MappedWeights) -> None:
        self._shared = shared
        self._weights: MappedWeights | None = weights
        self.name = graph.name
        self.input_names = tuple(spec.name for spec in graph.inputs)
        self.output_names = shared.output_names

    def run(self, feeds: dict[str, np.ndarray], shrink_arena: bool = False) -> list[np.ndarray]:
        if self._weights is None:
            raise RuntimeError(f"layer {self.name} was already released")
        return self._shared.run({**feeds, **self._weights.arrays}, shrink_arena)

    def release(self) -> None:
        """Unmap this layer's weights; the shared session stays open."""
        if self._weights is not None:
            self._weights.close()
            self._weights = None
