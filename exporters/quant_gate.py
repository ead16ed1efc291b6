"""The agreement gate of `edgekit export --dtype int8|mixed`: an int8 package is written only
when its rankings agree with its own fp32 package.

The exporter stages the fp32 package first (checked against torch as always), then
`quantize_package` writes int8 versions of the layer graphs and the table beside the fp32 files
(exporters/quantize.py) and runs both through the real runtime (`Selector`, exact mode) on the
gate data: `--gate-data F.jsonl` (the JSONL of `edgekit calibrate`/`bench`, edgekit/dataset.py)
or the bundled dev set (edgekit/data/devset_stdlib.jsonl, 120 queries x 50 candidates).

Statistic: top-K agreement = |int8 top-K set ∩ fp32 top-K set| / K per query (K = min(top_k,
candidates)), averaged over the queries: the statistic `edgekit calibrate` reports. Below
`min_agreement`:
- `int8` refuses (AgreementGateError, exit 2; the staged package is removed, nothing is
  written) and names the layers that cost the most. Per-layer sensitivity: the agreement when
  only that layer is int8 (everything else fp32, fp32 table), ties broken by the largest score
  difference from fp32 on the gate data; lowest agreement = costs the most.
- `mixed` keeps the costliest layer in fp32, re-measures, and repeats until the gate holds
  (greedy, in sensitivity order); the record lists the layers that stayed fp32.
The sensitivity passes (one per layer) run only when the all-int8 package fails the gate.

Cost: each pass runs the model over every gate sequence (the dev set: 6,000 pairs or texts);
a passing export runs 2 passes, a failing `mixed` one 2 + L + (layers kept fp32). MiniLM on a
shared 2-core machine: ~1 min per pass, its mixed export 33 min (14 passes). For a large model
(Qwen3-0.6B) pass a smaller `--gate-data`.

Example::

    gate = GateOptions(data=None, top_k=10, min_agreement=0.99)
    manifest = quantize_package(staged_fp32_manifest, "mixed", gate, progress)
    manifest.quantization["fp32_graphs"], manifest.quantization["agreement"]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import edgekit
from edgekit.dataset import Example, read_examples
from edgekit.errors import AgreementGateError, InvalidArgumentError
from edgekit.exporters.quantize import METHOD, OP_TYPES, PER_CHANNEL, install, quantize_graph, quantize_table
from edgekit.manifest import DTYPES, QUANTIZED_DTYPES, GraphSpec, Manifest
from edgekit.ranking_manifest import EmbeddingTable
from edgekit.runtimes.calibration import agreement
from edgekit.runtimes.ranking import top_k_order

Progress = Callable[[str, int, int], None]
DEV_SET = Path(edgekit.__file__).parent / "data" / "devset_stdlib.jsonl"
DEFAULT_TOP_K = 10
DEFAULT_MIN_AGREEMENT = 0.99
NAMED_LAYERS = 3  # how many of the costliest layers a refusal names


@dataclass(frozen=True)
class GateOptions:
    """What the gate runs on: `data` (None: the bundled dev set), `top_k`, `min_agreement` in (0, 1]."""

    data: Path | None = None
    top_k: int = DEFAULT_TOP_K
    min_agreement: float = DEFAULT_MIN_AGREEMENT

    def __post_init__(self) -> None:
        if type(self.top_k) is not int or self.top_k < 1:
            raise InvalidArgumentError(f"--gate-top-k must be a positive integer, got {self.top_k}")
        if not 0.0 < self.min_agreement <= 1.0:
            raise InvalidArgumentError(f"--min-agreement must be in (0, 1] (a top-K agreement), got "
                                       f"{self.min_agreement}")
        if self.data is not None and not Path(self.data).is_file():
            raise InvalidArgumentError(f"--gate-data {self.data} is not a file; pass a JSONL query set "
                                       "({\"query\", \"candidates\"} per line) or leave it out for the bundled "
                                       "dev set")


def gate_options(dtype: str, data: Path | None = None, top_k: int | None = None,
                 min_agreement: float | None = None) -> GateOptions | None:
    """The checked gate options of an export (None for fp32/fp16), before any model is loaded.
    InvalidArgumentError in one line: an unknown dtype (naming the choices), a gate option with
    a float dtype, a top-K < 1, an agreement outside (0, 1], a gate data file that is missing."""
    if dtype not in DTYPES:
        raise InvalidArgumentError(f"--dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    given = [flag for flag, value in (("--gate-data", data), ("--gate-top-k", top_k),
                                      ("--min-agreement", min_agreement)) if value is not None]
    if dtype not in QUANTIZED_DTYPES:
        if given:
            raise InvalidArgumentError(f"{', '.join(given)} apply to --dtype int8 or mixed, not {dtype}")
        return None
    return GateOptions(Path(data) if data is not None else None, DEFAULT_TOP_K if top_k is None else top_k,
                       DEFAULT_MIN_AGREEMENT if min_agreement is None else float(min_agreement))


def resolve_gate(dtype: str, gate: GateOptions | None) -> GateOptions | None:
    """What an exporter quantizes with: `gate` (default options when None) for int8/mixed, None
    for float dtypes (a gate given with one is an InvalidArgumentError); an unknown dtype too."""
    default = gate_options(dtype)
    if gate is not None and default is None:
        raise InvalidArgumentError(f"an agreement gate applies to --dtype int8 or mixed, not {dtype}")
    return gate or default


@dataclass(frozen=True)
class Measured:
    """One package variant against fp32 on the gate data."""

    agreement: float  # mean top-K set agreement over the queries
    worst_query: float  # the lowest agreement of one query
    score_max_abs_diff: float  # over every candidate of every query


class Gate:
    """Runs package variants over the gate examples and compares them with the fp32 package
    (whose scores are computed once, here)."""

    def __init__(self, fp32: Manifest, examples: Sequence[Example], top_k: int) -> None:
        self.examples = list(examples)
        self.top_k = top_k
        self.reference = self.scores(fp32)

    def scores(self, manifest: Manifest) -> list[np.ndarray]:
        """Every candidate's score per example, in candidate order (exact mode, all sessions kept open)."""
        from edgekit.runtimes.backends import backend_for
        from edgekit.runtimes.selector import Selector

        selector = Selector(manifest, backend_for("onnx", "cpu"), window=len(manifest.graphs))
        return [selector.rank(example.query, example.candidates, top_k=len(example.candidates)).scores_by_candidate()
                for example in self.examples]

    def measure(self, manifest: Manifest) -> Measured:
        agreements, diff = [], 0.0
        for expected, actual in zip(self.reference, self.scores(manifest)):
            k = min(self.top_k, len(expected))
            agreements.append(agreement(top_k_order(actual, k).tolist(), top_k_order(expected, k).tolist()))
            diff = max(diff, float(np.max(np.abs(actual - expected))))
        return Measured(float(np.mean(agreements)), float(min(agreements)), diff)


def variant(fp32: Manifest, int8_layers: dict[int, GraphSpec], chosen: set[int],
            table: EmbeddingTable | None) -> Manifest:
    """The in-memory manifest with the layers in `chosen` int8 (the rest fp32) and `table` (None:
    the fp32 table); its files are the staged ones, fp32 and CANDIDATES side by side."""
    graphs = tuple(int8_layers[graph.index] if graph.role == "layer" and graph.index in chosen else graph
                   for graph in fp32.graphs)
    assert fp32.ranking is not None
    ranking = dataclasses.replace(fp32.ranking, embedding_table=table or fp32.ranking.embedding_table)
    return dataclasses.replace(fp32, graphs=graphs, ranking=ranking)


def choose_layers(gate: Gate, fp32: Manifest, int8_layers: dict[int, GraphSpec], table: EmbeddingTable,
                  min_agreement: float, mixed: bool, progress: Progress
                  ) -> tuple[set[int], Measured, dict[int, Measured]]:
    """The layers to ship int8, what the gate measured for them and the per-layer sensitivity
    (empty when the all-int8 package passes). AgreementGateError when `mixed` is off and the
    all-int8 package fails, or when even every layer fp32 fails (the int8 table alone)."""
    layers = set(int8_layers)
    progress("gate: every layer int8", 0, 1)
    measured = gate.measure(variant(fp32, int8_layers, layers, table))
    if measured.agreement >= min_agreement:
        return layers, measured, {}
    sensitivity: dict[int, Measured] = {}
    for done, index in enumerate(sorted(layers)):
        progress(f"gate: only layer {index} int8", done, len(layers))
        sensitivity[index] = gate.measure(variant(fp32, int8_layers, {index}, None))
    costliest = sorted(layers, key=lambda i: (sensitivity[i].agreement, -sensitivity[i].score_max_abs_diff, i))
    named = ", ".join(f"{int8_layers[i].name} (agreement {sensitivity[i].agreement:.4f} alone)"
                      for i in costliest[:NAMED_LAYERS])
    if not mixed:
        raise AgreementGateError(
            f"int8 top-{gate.top_k} agreement with fp32 is {measured.agreement:.4f} on {len(gate.examples)} gate "
            f"queries, below --min-agreement {min_agreement}; costliest layers: {named}; export with --dtype mixed "
            "(keeps them fp32), lower --min-agreement, or keep fp32")
    kept: list[int] = []
    for index in costliest:
        kept.append(index)
        progress(f"gate: {len(kept)} layer(s) fp32", len(kept), len(layers))
        measured = gate.measure(variant(fp32, int8_layers, layers - set(kept), table))
        if measured.agreement >= min_agreement:
            return layers - set(kept), measured, sensitivity
    raise AgreementGateError(
        f"with every layer fp32 (only the embedding table int8) top-{gate.top_k} agreement is "
        f"{measured.agreement:.4f} on {len(gate.examples)} gate queries, below --min-agreement {min_agreement}; "
        "lower --min-agreement or keep fp32")


def quantize_package(fp32: Manifest, dtype: str, options: GateOptions, progress: Progress) -> Manifest:
    """The int8 (or mixed) package in place of the staged fp32 one at `fp32.root`, or
    AgreementGateError (the caller's staged directory then removes everything)."""
    root = fp32.root
    assert fp32.ranking is not None and dtype in QUANTIZED_DTYPES
    data = options.data or DEV_SET
    examples = read_examples(data)
    layers = fp32.graphs_by_role("layer")
    int8_layers: dict[int, GraphSpec] = {}
    for done, graph in enumerate(layers):
        progress(f"quantizing {graph.name}", done, len(layers))
        assert graph.index is not None
        int8_layers[graph.index] = quantize_graph(root, graph)
    table = quantize_table(root, fp32.ranking.embedding_table)
    progress(f"gate: fp32 on {len(examples)} queries", 0, 1)
    gate = Gate(fp32, examples, options.top_k)
    chosen, measured, sensitivity = choose_layers(gate, fp32, int8_layers, table, options.min_agreement,
                                                  dtype == "mixed", progress)
    final = install(root, variant(fp32, int8_layers, chosen, table))
    record: dict[str, Any] = {
        "method": METHOD,
        "weight_type": "int8",
        "op_types": list(OP_TYPES),
        "per_channel": PER_CHANNEL,
        "embedding_table": "int8, symmetric, one float32 scale per row",
        "int8_graphs": [graph.name for graph in layers if graph.index in chosen],
        "fp32_graphs": [graph.name for graph in fp32.graphs if not (graph.role == "layer" and graph.index in chosen)],
        "agreement": measured.agreement,
        "worst_query_agreement": measured.worst_query,
        "score_max_abs_diff": measured.score_max_abs_diff,
        "top_k": options.top_k,
        "min_agreement": options.min_agreement,
        "gate_data": data.name,
        "gate_queries": len(examples),
        "statistic": "mean over queries of |int8 top-K set ∩ fp32 top-K set| / K, both run by the edgekit runtime",
    }
    if sensitivity:
        record["sensitivity"] = {int8_layers[i].name: {"agreement": value.agreement,
                                                       "score_max_abs_diff": value.score_max_abs_diff}
                                 for i, value in sorted(sensitivity.items())}
    parity = {**fp32.parity, "reference": "torch fp32, for the graphs before quantization (int8 against fp32: "
                                          "see quantization)"}
    return dataclasses.replace(final, dtype=dtype, quantization=record, parity=parity)
