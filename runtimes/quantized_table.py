"""An int8 embedding table with a float32 scale per row (packages of dtype int8 or mixed).

Row r of the float table is `values[r] * scales[r]`. Both arrays are memory-mapped; indexing
gathers the rows of a batch's tokens and dequantizes only those, so a query reads
tokens x E bytes of the table, as with a float table (docs/FORMAT.md, "embedding_table").

Example::

    table = QuantizedTable(np.load("values.npy", mmap_mode="r"), np.load("scales.npy", mmap_mode="r"))
    table[np.array([[101, 2054]])].shape   # (1, 2, E), float32
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from edgekit.errors import IntegrityError

if TYPE_CHECKING:
    from edgekit.manifest import Manifest
    from edgekit.ranking_manifest import EmbeddingTable


class QuantizedTable:
    """int8 rows [vocab, E] and their float32 scales [vocab], read like a float32 table."""

    def __init__(self, values: np.ndarray, scales: np.ndarray) -> None:
        self.values = values
        self.scales = scales
        self.shape = values.shape
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        """The float32 rows of `ids` (any shape of integer ids): shape ids.shape + (E,)."""
        rows = np.asarray(self.values[ids], dtype=np.float32)
        return rows * np.asarray(self.scales[ids], dtype=np.float32)[..., None]


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: scale = max |row| / 127 (1 for an all-zero row), values =
    round(row / scale) in [-127, 127]; returns (values int8 [V,E], scales float32 [V]). The
    largest error of an element is scale / 2, i.e. 0.4% of its row's largest magnitude."""
    table = np.asarray(table, dtype=np.float32)
    peak = np.max(np.abs(table), axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    values = np.clip(np.rint(table / scales[:, None]), -127, 127).astype(np.int8)
    return values, scales


def open_quantized_table(manifest: Manifest, table: EmbeddingTable,
                         mapped: Callable[[Manifest, str, tuple[int, ...]], np.ndarray]) -> QuantizedTable:
    """The package's int8 table, values and scales memory-mapped by `mapped` (which checks each
    file's shape); IntegrityError when either holds another dtype than the manifest says."""
    assert table.scales is not None
    values = mapped(manifest, table.entry.file, table.shape)
    scales = mapped(manifest, table.scales.file, (table.shape[0],))
    for array, entry, dtype in ((values, table.entry, np.int8), (scales, table.scales, np.float32)):
        if array.dtype != np.dtype(dtype):
            raise IntegrityError(f"{entry.file} holds {array.dtype}, the manifest says {np.dtype(dtype)}; "
                                 "re-export the package", [entry.file])
    return QuantizedTable(values, scales)
