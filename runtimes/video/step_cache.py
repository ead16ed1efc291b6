"""The deep-feature step cache (DeepCache's rule, Step Rehash's adaptive variant) for a UNet run
as stage graphs: settings, where the UNet splits, and which steps reuse the cache.

Settings (`parse_step_cache`, `edgekit run --step-cache`, `generate(..., step_cache=)`)::

    none | interval:N | adaptive:T    [,depth:D] [,max-skip:M] [,warmup:W]

* `interval:N` (DeepCache): a full UNet evaluation, then N-1 cached steps, and again.
* `adaptive:T` (Step Rehash): a step reuses the cache while the relative L1 change of the first
  down block's output against the last full step's stays below T (`relative_l1`).
* `depth:D` (default 0): the cached steps run down blocks 0..D and the last D+1 up blocks (the
  shallow path); the input of up block n-1-D (what the deeper blocks hand it) is the cached
  deep feature, taken from the last full step. D ranges over 0..n-1 (n down blocks).
* `max-skip:M`: never more than M cached steps in a row (default: N-1 for interval, 2 adaptive).
* `warmup:W` (default 1): the first W steps are always full (the first must be: no cache yet).

One decision per step for the whole guidance batch: the unconditional and conditional halves
run in one UNet batch and the statistic is taken over both, so both halves reuse or neither.
`interval:1` and `adaptive:0` never reuse (the change is never below 0): every step is full
and the run equals the uncached one bit for bit.

Where the UNet splits is derived from the package's graph IO (`split_unet`): no manifest field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgekit.errors import InvalidArgumentError
from edgekit.manifest import GraphSpec
from edgekit.runtimes.video.unet import block_name, state_name
from edgekit.video_manifest import OpGroup

MODES = ("none", "interval", "adaptive")
KEYS = ("depth", "max-skip", "warmup")
FIX = "use none, interval:N (N >= 1) or adaptive:T (T >= 0), then optionally ,depth:D ,max-skip:M ,warmup:W"


@dataclass(frozen=True)
class StepCache:
    """Checked step-cache settings (see the module docstring). `max_skip` None: the mode's default."""

    mode: str = "none"
    interval: int = 1
    threshold: float = 0.0
    depth: int = 0
    max_skip: int | None = None
    warmup: int = 1

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def skip_limit(self) -> int:
        """Cached steps allowed in a row."""
        if self.max_skip is not None:
            return self.max_skip
        return self.interval - 1 if self.mode == "interval" else 2

    def text(self) -> str:
        """The canonical spelling, every option written out."""
        if not self.enabled:
            return "none"
        head = f"interval:{self.interval}" if self.mode == "interval" else f"adaptive:{self.threshold:g}"
        return f"{head},depth:{self.depth},max-skip:{self.skip_limit},warmup:{self.warmup}"


def _bad(text: str, why: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"step cache {text!r}: {why}; {FIX}")


def _integer(text: str, key: str, value: str, low: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _bad(text, f"{key} must be an integer, got {value!r}") from None
    if number < low:
        raise _bad(text, f"{key} must be >= {low}, got {number}")
    return number


def parse_step_cache(value: str | StepCache | None) -> StepCache:
    """`value` (a settings string, a StepCache or None: none) as a StepCache; InvalidArgumentError
    naming what is wrong and the grammar for anything else."""
    if value is None:
        return StepCache()
    if isinstance(value, StepCache):
        return value
    if not isinstance(value, str):
        raise InvalidArgumentError(f"step_cache must be a string like 'interval:3', got {type(value).__name__}")
    text = value.strip()
    head, *rest = [part.strip() for part in text.split(",")]
    mode, _, argument = head.partition(":")
    options: dict[str, str] = {}
    for part in rest:
        key, sep, option = part.partition(":")
        if not sep or key not in KEYS:
            raise _bad(text, f"unknown option {part!r}")
        if key in options:
            raise _bad(text, f"{key} given twice")
        options[key] = option
    if mode == "none":
        if argument or options:
            raise _bad(text, "none takes no value or options")
        return StepCache()
    interval, threshold = 1, 0.0
    if mode == "interval":
        interval = _integer(text, "interval", argument, 1)
    elif mode == "adaptive":
        try:
            threshold = float(argument)
        except ValueError:
            raise _bad(text, f"adaptive needs a threshold number, got {argument!r}") from None
        if not math.isfinite(threshold) or threshold < 0:
            raise _bad(text, f"the adaptive threshold must be a finite number >= 0, got {argument}")
    else:
        raise _bad(text, f"unknown mode {mode!r}")
    return StepCache(mode=mode, interval=interval, threshold=threshold,
                     depth=_integer(text, "depth", options["depth"], 0) if "depth" in options else 0,
                     max_skip=_integer(text, "max-skip", options["max-skip"], 1) if "max-skip" in options else None,
                     warmup=_integer(text, "warmup", options["warmup"], 1) if "warmup" in options else 1)


@dataclass(frozen=True)
class UnetSplit:
    """Where one UNet evaluation (graph indices into the step's graph list) splits at `depth`.

    `prefix` [0, prefix_end): time_embedding and down blocks 0..depth (run on every step);
    `suffix` [suffix_start, end): the last depth+1 up blocks (run on every step; graph
    suffix_start reads the deep feature as `hidden_states`); between them the deep branch, run
    on full steps only. `probe`: the graph after which `hidden_states` is the first down block's
    output (the adaptive statistic). `blocks`: the UNet blocks in order; `shallow_blocks` those
    a cached step runs. `prefetch_at`: the first graph of the prefix's last block (the swap
    starts reading the cached feature back when it starts)."""

    depth: int
    prefix_end: int
    suffix_start: int
    probe: int
    prefetch_at: int
    blocks: tuple[str, ...]
    shallow_blocks: tuple[str, ...]


def split_unet(graphs: Sequence[GraphSpec], op_groups: Mapping[str, OpGroup], depth: int) -> UnetSplit:
    """The split of `graphs` (Manifest.unet_graphs: time_embedding, then blocks or groups) at
    `depth`, derived from the graph IO; InvalidArgumentError when `depth` is not one of the
    package's (0..n-1) or the shallow path would read a tensor only the deep branch makes."""
    names = [block_name(graph, op_groups) for graph in graphs]
    blocks = tuple(dict.fromkeys(name for name in names if name is not None))
    downs = [b for b in blocks if b.startswith("down_block")]
    ups = [b for b in blocks if b.startswith("up_block")]
    if not downs or len(downs) != len(ups):
        raise InvalidArgumentError("this package's UNet has no matching down and up blocks; the step cache needs them")
    if depth >= len(downs):
        raise InvalidArgumentError(f"step cache depth:{depth} is not a depth of this package's UNet ({len(downs)} down "
                                   f"blocks: depth 0..{len(downs) - 1}); pick one of those")
    prefix_blocks = set(downs[: depth + 1])
    suffix_blocks = set(ups[len(ups) - 1 - depth:])
    prefix_end = max(i for i, name in enumerate(names) if name in prefix_blocks) + 1
    suffix_start = min(i for i, name in enumerate(names) if name in suffix_blocks)
    if any(name not in prefix_blocks for name in names[1:prefix_end]) or any(
            name not in suffix_blocks for name in names[suffix_start:]) or names[0] is not None:
        raise InvalidArgumentError("this package's UNet graphs are not in down, mid, up order; the step cache needs it")
    made = {"hidden_states", "timestep", "added_time_ids", "encoder_hidden_states", "image_only_indicator"}
    for graph in graphs[:prefix_end]:
        made |= {state_name(graph, spec.name) for spec in graph.outputs}
    made.add("hidden_states")  # the deep feature
    for graph in graphs[suffix_start:]:
        missing = [spec.name for spec in graph.inputs if spec.name not in made]
        if missing:
            raise InvalidArgumentError(f"step cache depth:{depth}: graph {graph.name} reads {missing[0]}, which only "
                                       "the deep branch makes; pick another depth")
        made |= {state_name(graph, spec.name) for spec in graph.outputs}
    probe = max(i for i, name in enumerate(names) if name == downs[0])
    prefetch_at = min(i for i, name in enumerate(names) if name == downs[depth])
    shallow = tuple(b for b in blocks if b in prefix_blocks or b in suffix_blocks)
    return UnetSplit(depth, prefix_end, suffix_start, probe, prefetch_at, blocks, shallow)


def relative_l1(feature: np.ndarray, reference: np.ndarray) -> float:
    """sum |feature - reference| / sum |reference| over the whole tensor (both guidance halves): 0
    for an unchanged feature, scale-free. The difference is taken in the arrays' dtype (float32,
    as diffusers' First-Block-Cache takes it) in one scratch array, the sums accumulated in
    float64 (a float64 copy of a DiT's hidden states would add 2x their size to the step's peak)."""
    scratch = np.subtract(feature, reference)
    np.abs(scratch, out=scratch)
    numerator = float(scratch.sum(dtype=np.float64))
    np.abs(reference, out=scratch)
    denominator = float(scratch.sum(dtype=np.float64))
    return numerator / denominator if denominator > 0 else (0.0 if numerator == 0 else math.inf)


class StepPlanner:
    """Decides, step by step, whether a step reuses the cache; records the plan.

    `may_reuse(i)`: before step i runs, whether it can be a cached step at all (a cache exists, past
    warmup, under max-skip; interval: inside the N-1 steps after a full one). Adaptive steps that
    may reuse then `decide(change)` after the shallow prefix; interval steps reuse whenever they
    may. `record(cached, change)` after each step.
    """

    def __init__(self, settings: StepCache) -> None:
        self.settings = settings
        self.plan: list[str] = []  # "F" full, "C" cached, per step
        self.changes: list[float | None] = []  # adaptive: the statistic of each step that may reuse
        self._streak = 0
        self._has_cache = False

    def may_reuse(self, i: int) -> bool:
        s = self.settings
        if not s.enabled or not self._has_cache or i < s.warmup or self._streak >= s.skip_limit:
            return False
        return s.mode == "adaptive" or self._streak + 1 < s.interval

    def decide(self, change: float) -> bool:
        """Adaptive: reuse when the change is below the threshold."""
        return change < self.settings.threshold

    def record(self, cached: bool, change: float | None = None) -> None:
        self.plan.append("C" if cached else "F")
        self.changes.append(change)
        self._streak = self._streak + 1 if cached else 0
        self._has_cache = True  # a full step leaves one; a cached step keeps it
