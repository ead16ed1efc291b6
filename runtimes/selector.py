"""Selector: top-K selection by streaming a package's graphs over all candidates.

Monolithic forwarding: every candidate passes layer l before any passes layer l+1, so each
graph is loaded once per query (LayerStream keeps at most W resident). Inside a graph the
candidates run in chunks of C, grouped by length. With a pruning policy, the head scores the
undecided candidates between layers; accepted and dropped candidates stop computing, and when
none are left undecided the pass stops (no graph past the one already prefetched is loaded).

Result order (default): candidates accepted earlier come first (earlier-accepted clusters were
above everything still undecided then), ties by their score at acceptance; candidates that
reached the last layer follow by final score. `order="exact"` keeps accepted candidates
computing to the last layer (at most K of them) so order and scores equal the full model's.

A NaN or inf from any graph is a `NonFiniteOutputError` naming that graph (runtimes/chunks.py),
raised before any score exists or the policy decides on it: never a ranking.

Shared-layers packages (docs/FORMAT.md, "Shared layers"): every layer runs one session of the
shared graph, created on first use and kept for the Selector's life (released by `close`); what
the layer stream loads and releases per layer is that layer's weights, memory-mapped and fed as
inputs (runtimes/shared_weights.py), so at most W layers' weights are mapped at once and the
prefetch thread pages the next layer's in while the current one computes. `graphs_loaded` counts
sessions created (the shared one once, by the call that created it), `layer_weights_mapped` the
layers' weight maps opened.

Threads: one Selector may be shared; `rank` calls run concurrently. What they share is guarded
by one lock: the kept-open sessions (resident mode loads each graph once, whichever call asks
first, and the others wait for it), the shared layer session and each pass's counters. Each call counts the sessions it
created itself, so its `graphs_loaded` never includes another call's loads. Streaming loads run
outside the lock (each call streams its own sessions). Concurrent calls each hold their own
pass's activations and streamed sessions, so the peak grows with the calls in flight; on a CPU
that one call already saturates they add little throughput (docs/BENCHMARKS.md, "Soak"):
serialise them (one lock around `rank`) to keep one pass's peak.

Example::

    selector = Selector(Manifest.load("pkg"), backend_for("onnx", "cpu"), window=2, chunk=16)
    ranking = selector.rank("how do I sort a list", ["sorted(iterable)", "open(file)"], top_k=1)
    ranking[0].index, ranking[0].score, ranking.stats.max_resident_graphs
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from edgekit.errors import (
    CandidatesError,
    IntegrityError,
    InvalidArgumentError,
    MemoryBudgetError,
    NotAPackageError,
)
from edgekit.manifest import GraphSpec, Manifest
from edgekit.measure import current_rss_mb, peak_rss_mb, stopwatch
from edgekit.runtimes.backends import Backend, Session
from edgekit.runtimes.chunks import ChunkRunner
from edgekit.runtimes.graph_io import checked_backend
from edgekit.runtimes.layer_stream import LayerStream
from edgekit.runtimes.planner import Plan, plan
from edgekit.runtimes.policies import parse_prune
from edgekit.runtimes.pruning import Decider, Policy
from edgekit.runtimes.quantized_table import QuantizedTable, open_quantized_table
from edgekit.runtimes.ranking import Ranking, Result, RunStats, top_k_order
from edgekit.runtimes.shared_weights import MappedWeights, SharedLayerSession
from edgekit.runtimes.text import EncodedText, TextEncoder

DEFAULT_CHUNK = 16
DEFAULT_WINDOW = 2
ORDERS = ("default", "exact")

__all__ = ["DEFAULT_CHUNK", "Ranking", "Result", "RunStats", "Selector", "top_k_order"]


def open_embedding_table(manifest: Manifest) -> np.ndarray | QuantizedTable | None:
    """Memory-map the table: a batch reads only the rows of its tokens, never the whole table
    (an int8 table dequantizes only those rows: runtimes/quantized_table.py)."""
    table = manifest.ranking.embedding_table
    if table is None:
        return None
    if table.scales is not None:
        return open_quantized_table(manifest, table, _mapped)
    return _mapped(manifest, table.entry.file, table.shape)


def _mapped(manifest: Manifest, relative: str, shape: tuple[int, ...]) -> np.ndarray:
    """The .npy file at `relative`, memory-mapped, checked to have `shape`."""
    path = manifest.root / relative
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise IntegrityError(f"cannot read {relative} ({error}); run `edgekit verify` and re-export",
                             [relative]) from None
    if tuple(array.shape) != tuple(shape):
        raise IntegrityError(f"{relative} has shape {array.shape}, the manifest says {list(shape)}; "
                             "re-export the package", [relative])
    return array


class _Pinned:
    """A kept-open session lent to one pass: the pass's `release` leaves it open."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.input_names = session.input_names
        self.output_names = session.output_names

    def run(self, feeds: dict[str, np.ndarray], shrink_arena: bool = False) -> list[np.ndarray]:
        return self.session.run(feeds, shrink_arena)

    def release(self) -> None:
        pass


class _Pass:
    """State of one ranking pass: who is undecided, accepted or dropped, and when."""

    def __init__(self, candidates: int, top_k: int) -> None:
        self.top_k = top_k
        self.undecided = list(range(candidates))
        self.accepted: list[tuple[int, int, float]] = []  # (row, depth, score at acceptance)
        self.final: dict[int, float] = {}
        self.alive_per_depth: list[int] = []
        self.candidate_layers = 0
        self.graphs_loaded = 0  # sessions this pass created (under the selector's lock)
        self.weights_mapped = 0  # shared layers: layer weight maps this pass opened (same lock)
        self.trace: list[dict[int, float]] = []  # scores of the undecided at each depth checked

    @property
    def open_slots(self) -> int:
        return self.top_k - len(self.accepted)


class Selector:
    """Ranks candidates against a query with an exported encoder package."""

    def __init__(self, manifest: Manifest, backend: Backend, window: int | None = None, chunk: int | None = None,
                 memory_budget_mb: float | None = None) -> None:
        if window is not None and window < 1:
            raise InvalidArgumentError(f"window must be >= 1, got {window}")
        if chunk is not None and chunk < 1:
            raise InvalidArgumentError(f"chunk must be >= 1 candidates, got {chunk}")
        if memory_budget_mb is not None and (window is not None or chunk is not None):
            raise InvalidArgumentError("a memory budget chooses window and chunk itself; pass the budget or "
                                       "window/chunk, not both")
        if manifest.ranking is None:
            raise NotAPackageError(f"{manifest.root} is a {manifest.task} package, not a ranking one; open it with "
                                   "edgekit.load() or `edgekit run PKG --image ...`")
        if memory_budget_mb is not None and not memory_budget_mb > 0:
            raise MemoryBudgetError(f"memory budget must be a positive number of MiB, got {memory_budget_mb}")
        self.manifest = manifest
        self.section = manifest.ranking  # the ranking section (checked above: never None here)
        self.backend = checked_backend(backend, manifest)  # every session's IO names checked on load
        self.memory_budget_mb = memory_budget_mb
        self.window = window or DEFAULT_WINDOW
        # window >= every graph: nothing needs streaming, so sessions stay open across calls
        self.keep_resident = memory_budget_mb is None and self.window >= len(manifest.stream_graphs)
        self._pinned: dict[str, Session] = {}  # by graph name (shared layers share one path)
        self._shared: dict[str, Session] = {}  # shared graph path -> its session, for the Selector's life
        self._lock = threading.RLock()  # guards _pinned, _shared and every pass's counters
        self.chunk = chunk or DEFAULT_CHUNK
        self.encoder = TextEncoder(manifest)
        self.embedding_table = open_embedding_table(manifest)
        # The planner's "process" part: memory held before any pass. Measured now, not per call:
        # after a pass the allocator keeps freed pages, which the next pass reuses.
        self._process_mb = current_rss_mb()

    def rank(self, query: str, candidates: Sequence[str], top_k: int = 10, prune: str | float | None = None,
             order: str = "default", trace: bool = False, instruction: str | None = None) -> Ranking:
        """Score candidates against `query`; return the best `min(top_k, N)`, best first.

        prune: None/"exact" (every candidate through every layer), "auto" (the package's
        calibrated policy), "threshold:X[@D]" (cluster pruning) or "stable:M[@D]" (rank
        stability; see runtimes/policies.py). order: "default" or "exact" (see module doc).
        trace: record every candidate's head score after every layer (for calibration).
        instruction: decoder rerankers only; replaces the package's default instruction.
        """
        texts = self._check(query, candidates, top_k, order)
        self._check_instruction(instruction)
        policy = parse_prune(prune, self.section.scoring.kind, self.section.calibration, top_k)
        if len(texts) <= top_k:
            policy = None  # every candidate is in the top-K: nothing to prune, rank them exactly
        with stopwatch() as timing:
            encoded, query_row = self._encode(query, texts, instruction)
            chosen = self._plan(encoded, policy is not None or trace)
            window, chunk = (chosen.window, chosen.chunk) if chosen else (self.window, self.chunk)
            runner = ChunkRunner(encoded, chunk, self.encoder.pad_token_id, self.encoder.use_type_ids,
                                 self.embedding_table, self.section.padding_side, self.section.rotary)
            state = _Pass(len(texts), min(top_k, len(texts)))
            stream, depth_heads = self._forward(runner, state, policy, query_row, order, trace, window)
        results = self._results(state, texts)
        stats = RunStats(
            latency_ms=timing["ms"],
            peak_rss_mb=peak_rss_mb(),
            candidates=len(texts),
            top_k_requested=top_k,
            top_k_returned=len(results),
            truncated=sum(item.truncated for item in encoded[: len(texts)]),
            graphs_loaded=state.graphs_loaded,  # sessions created by this call (not by concurrent ones)
            layer_weights_mapped=state.weights_mapped,
            max_resident_graphs=(self._pinned_count() if self.keep_resident
                                 else stream.max_resident + (1 if policy is not None or trace else 0)
                                 + depth_heads),
            window=window,
            chunk=chunk,
            chunks=runner.runs,
            tokens=sum(len(item.ids) for item in encoded),
            padded_tokens=runner.padded_tokens,
            provider=self.backend.provider,
            prune="exact" if policy is None else policy.describe(),
            layers=self.section.num_layers,
            candidate_layers=state.candidate_layers,
            candidate_layers_exact=len(texts) * self.section.num_layers,
            alive_per_layer=state.alive_per_depth,
            query_truncated=query_row is not None and encoded[query_row].truncated,
            memory_budget_mb=self.memory_budget_mb,
            plan=chosen.to_dict() if chosen else None,
        )
        return Ranking(results, stats, state.trace if trace else None)

    def plan(self, query: str, candidates: Sequence[str], instruction: str | None = None,
             prune: str | float | None = None) -> Plan:
        """The plan `rank` would use under the memory budget (MemoryBudgetError if none fits)."""
        if self.memory_budget_mb is None:
            raise InvalidArgumentError("planning needs a memory budget (memory_budget_mb= / --memory-budget)")
        texts = self._check(query, candidates, 1, "default")
        self._check_instruction(instruction)
        encoded, _ = self._encode(query, texts, instruction)
        chosen = self._plan(encoded, prune not in (None, "exact"))
        assert chosen is not None
        return chosen

    def _plan(self, encoded: Sequence[EncodedText], heads_resident: bool) -> Plan | None:
        if self.memory_budget_mb is None:
            return None
        lengths = [len(item.ids) for item in encoded]
        return plan(self.manifest, lengths, self.memory_budget_mb, self._process_mb, heads_resident,
                    self.backend.traits)

    def _encode(self, query: str, texts: list[str], instruction: str | None) -> tuple[list[EncodedText], int | None]:
        if self.manifest.task == "rerank":
            return self.encoder.encode_pairs(query, texts, instruction), None
        return self.encoder.encode_texts([*texts, query]), len(texts)  # the query rides along, last

    def _check_instruction(self, instruction: str | None) -> None:
        if instruction is not None and self.section.prompt is None:
            raise InvalidArgumentError("--instruction is for decoder rerankers (packages with a prompt); "
                                       "this package has none")
        if instruction is not None and not instruction.strip():
            raise InvalidArgumentError("instruction is empty; pass the task description or leave it out")

    # --- the pass ---------------------------------------------------------------------------
    def _forward(self, runner: ChunkRunner, state: _Pass, policy: Policy | None, query_row: int | None,
                 order: str, trace: bool, window: int) -> tuple[LayerStream[Session, GraphSpec], int]:
        """Run the pass; returns the stream (for its residency count) and how many per-depth
        head sessions it kept open besides."""
        graphs = self.manifest.stream_graphs
        head_graph = graphs[-1]

        def load(graph: GraphSpec) -> Session:
            return self._load(graph, state)

        # The head stays resident when it is needed between layers; otherwise it loads last.
        # Per-depth heads (when the package has them) are loaded on first use and kept for the pass.
        head = load(head_graph) if (policy is not None or trace) else None
        decider = policy.start() if policy is not None else None  # this pass's memory, if the policy has any
        depth_heads: dict[str, Session] = {}
        hidden: dict[int, np.ndarray] | None = None
        stream: LayerStream[Session, GraphSpec] = LayerStream(graphs[:-1], load, window=window)
        walk = iter(stream)
        keep_accepted = order == "exact"
        layers = self.section.num_layers
        try:
            for index, session in walk:  # index 0: embeddings; index d: layer d-1
                computing = state.undecided + ([row for row, _, _ in state.accepted] if keep_accepted else [])
                rows = computing + ([query_row] if query_row is not None else [])
                hidden = runner.run(session, rows, hidden, per_token=True, graph=graphs[index])
                depth = index  # layers computed so far
                if depth == 0:
                    continue
                state.alive_per_depth.append(len(computing))
                state.candidate_layers += len(computing)
                scoring_due = trace or (policy is not None and depth >= policy.min_depth)
                if head is not None and depth < layers and scoring_due and state.undecided:
                    depth_head = self.manifest.head_for_depth(depth)
                    if depth_head.name != head_graph.name and depth_head.name not in depth_heads:
                        depth_heads[depth_head.name] = load(depth_head)
                    scorer = depth_heads.get(depth_head.name, head)
                    self._decide(scorer, depth_head, runner, hidden, state, decider, depth, query_row, trace)
                if not state.undecided and not keep_accepted:
                    break  # all decided: later layers (past the one already prefetched) never load
            walk.close()  # the prefetch thread is done: no load of this pass runs past here
            if head is None:
                head = load(head_graph)
            final_rows = state.undecided + ([row for row, _, _ in state.accepted] if keep_accepted else [])
            if final_rows and hidden is not None:
                scores = self._score(head, head_graph, runner, hidden, final_rows, query_row)
                state.final = dict(zip(final_rows, scores.tolist()))
                if trace:
                    state.trace.append(dict(state.final))
        finally:
            walk.close()  # also on an error: release this pass's sessions and join its prefetch thread
            if head is not None:
                head.release()
            for session in depth_heads.values():
                session.release()
        return stream, len(depth_heads)

    def _load(self, graph: GraphSpec, state: _Pass) -> Session:
        """A fresh session (streaming), or the kept-open one when every graph fits the window.

        Counted once in the selector's total and in `state` (the calling pass). Resident mode
        loads under the lock, so concurrent passes asking for the same graph get one session."""
        if not self.keep_resident:
            return self._open(graph, state)  # outside the lock: concurrent passes load in parallel
        with self._lock:
            if graph.name not in self._pinned:
                self._pinned[graph.name] = self._open(graph, state)
            return _Pinned(self._pinned[graph.name])

    def _open(self, graph: GraphSpec, state: _Pass) -> Session:
        """A session of `graph`; for a shared layer, the shared session with this layer's weights
        mapped and their read-ahead started."""
        if graph.weights is None:
            session = self.backend.load(self.manifest.root / graph.path)
            with self._lock:
                state.graphs_loaded += 1
            return session
        shared = self._shared_session(graph, state)
        weights = MappedWeights(self.manifest.root, graph)
        weights.prefetch()
        with self._lock:
            state.weights_mapped += 1
        return SharedLayerSession(shared, graph, weights)

    def _shared_session(self, graph: GraphSpec, state: _Pass) -> Session:
        """The session of the shared graph at `graph.path`, created once (by whichever pass asks
        first; the others wait for it) and kept until `close`."""
        with self._lock:
            if graph.path not in self._shared:
                self._shared[graph.path] = self.backend.load(self.manifest.root / graph.path)
                state.graphs_loaded += 1
            return self._shared[graph.path]

    def _pinned_count(self) -> int:
        with self._lock:
            return len(self._pinned)

    def close(self) -> None:
        """Release sessions kept open across calls (every graph's when the window holds them all;
        the shared layer graph's always). Call it when no `rank` is running."""
        with self._lock:
            for session in self._pinned.values():
                session.release()
            self._pinned.clear()
            for session in self._shared.values():
                session.release()
            self._shared.clear()

    def _score(self, head: Session, graph: GraphSpec, runner: ChunkRunner, hidden: dict[int, np.ndarray],
               rows: list[int], query_row: int | None) -> np.ndarray:
        """Head scores of `rows` from their current hidden states (cosine with the query's).
        The head's outputs are checked finite (runner.run), so the scores are too."""
        if query_row is None:
            outputs = runner.run(head, rows, hidden, per_token=False, graph=graph)
            return np.array([float(outputs[row]) for row in rows])
        outputs = runner.run(head, [*rows, query_row], hidden, per_token=False, graph=graph)
        query = outputs[query_row].astype(np.float64)  # fp16 packages: score in double precision
        matrix = np.stack([outputs[row] for row in rows]).astype(np.float64)
        norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
        return (matrix @ query) / np.maximum(norms, 1e-12)

    def _decide(self, head: Session, graph: GraphSpec, runner: ChunkRunner, hidden: dict[int, np.ndarray],
                state: _Pass, decider: Decider | None, depth: int, query_row: int | None, trace: bool) -> None:
        if not state.undecided:
            return
        rows = list(state.undecided)
        scores = self._score(head, graph, runner, hidden, rows, query_row)  # finite, or raised before deciding
        if trace:
            state.trace.append(dict(zip(rows, scores.tolist())))
        if decider is None:
            return
        decision = decider.decide(depth, scores, state.open_slots)
        accepted = sorted(decision.accept.tolist(), key=lambda i: (-scores[i], rows[i]))
        state.accepted.extend((rows[i], depth, float(scores[i])) for i in accepted)
        decided = {rows[i] for i in [*decision.accept.tolist(), *decision.drop.tolist()]}
        state.undecided = [row for row in rows if row not in decided]

    def _results(self, state: _Pass, texts: list[str]) -> list[Result]:
        """The selected set is the accepted candidates plus the best finalists for the open slots.

        Default order: accepted first (in acceptance order, with their score then), finalists
        after. When the accepted candidates were finished (order exact), the same set is sorted
        by final score. Ties always break by the lower candidate index, as FORMAT.md says.
        """
        layers = self.section.num_layers
        decided = {row: depth for row, depth, _ in state.accepted}
        open_slots = max(0, state.top_k - len(state.accepted))
        finalists = sorted(state.undecided, key=lambda row: (-state.final[row], row))[:open_slots]
        if all(row in state.final for row in decided):
            selected = sorted([*decided, *finalists], key=lambda row: (-state.final[row], row))
            return [Result(row, state.final[row], texts[row], decided.get(row, layers)) for row in selected]
        ranked = [Result(row, score, texts[row], depth) for row, depth, score in state.accepted]
        return ranked + [Result(row, state.final[row], texts[row], layers) for row in finalists]

    @staticmethod
    def _check(query: str, candidates: Sequence[str], top_k: int, order: str) -> list[str]:
        if isinstance(candidates, str):
            raise CandidatesError("candidates must be a list of strings, not one string")
        texts = list(candidates)
        if not texts:
            raise CandidatesError("no candidates to rank; pass at least one candidate text")
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise CandidatesError(f"candidate {bad[0]} is {type(texts[bad[0]]).__name__}, not str")
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgumentError("query is empty; pass the text to rank candidates against")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
            raise InvalidArgumentError(f"top_k must be a positive integer, got {top_k!r}")
        if order not in ORDERS:
            raise InvalidArgumentError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        return texts
