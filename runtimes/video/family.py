"""The video family contract: what one family (SVD today, Wan next) hands the one driver.

diffusers' shape: pipelines over shared schedulers. Here a family is one module that knows its
stages and its conditioning; the loop that runs them (runtimes/video/driver.py) is written once:

    prepare (stage "encode") -> for each timestep: network + family.predict, schedule.step
    (stage "denoise") -> family.decode (stage "decode")

Three seams, each a small protocol:

* `Schedule` (timesteps, init_noise_sigma, scale, step): the scheduler math for one run, built by
  `family.schedule(steps)` from the package's scheduler config; shared between families that
  use the same scheduler (runtimes/video/scheduler.py's Euler).
* `Network`: the model the loop evaluates once per step (SVD's UNet, Wan's DiT) on the family's
  named inputs. The family's `network(request)` is the package's own (SVD: stage graphs
  streamed through LayerStream); a caller may pass another to the driver without copying the
  loop: `OneGraph(session)` is the whole model as one graph (the bench's one-graph baseline).
* `VideoFamily`: `request` checks the caller's options (package defaults for unset ones) before
  anything runs; `prepare` encodes the conditioning and returns the initial noise; `predict`
  turns (scaled latents, timestep) into the prediction the scheduler steps on (input wiring,
  classifier-free guidance) by calling the network; `decode` maps denoised latents to frames.

A new family is one module implementing `VideoFamily` plus one line in
runtimes/video/families.py. Example (a numpy-only family: tests/test_video_family.py)::

    family = ToyFamily(manifest=None, backend=None, window=1)
    result = generate(family, family.request(num_frames=2, steps=3, seed=0))
    result.frames, result.latents, result.stats.denoise_ms
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.backends import Session
from edgekit.runtimes.video.tiles import check_tile

if TYPE_CHECKING:
    from edgekit.runtimes.video.driver import VideoStats


def positive(name: str, value: Any) -> int:
    """`value` as an int when it is a positive integer; InvalidArgumentError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class DecodeSettings:
    """How `decode` may bound its memory: `chunk` frames per decoder call (None: all at once),
    spatial tiles of `tile` latent pixels sharing `tile_overlap` (None with a tile: tile // 4;
    None without: untiled). Checked when built (InvalidArgumentError), so every path that
    decodes gets the same checks: a positive chunk, a tile that `check_tile` accepts, no overlap
    without a tile."""

    chunk: int | None = None
    tile: int | None = None
    tile_overlap: int | None = None

    def __post_init__(self) -> None:
        if self.chunk is not None:
            object.__setattr__(self, "chunk", positive("decode_chunk", self.chunk))
        if self.tile is not None:
            tile, overlap = check_tile(self.tile, self.tile_overlap)
            object.__setattr__(self, "tile", tile)
            object.__setattr__(self, "tile_overlap", overlap)
        elif self.tile_overlap is not None:
            raise InvalidArgumentError("decode tile overlap needs a decode tile (--decode-tile N)")


class Request(Protocol):
    """What the driver reads from a family's request; the rest is the family's own."""

    num_frames: int
    height: int
    width: int
    steps: int
    decode: DecodeSettings


@dataclass(frozen=True)
class Prepared:
    """What `prepare` returns: the initial noise [1, F, C, h, w] (unscaled standard normal; the
    driver multiplies it by the schedule's init_noise_sigma) and the family's conditioning state,
    passed back to every `predict` call."""

    latents: np.ndarray
    state: Any


class Schedule(Protocol):
    """One run's scheduler: `timesteps` fed to the network; `scale` the latents before step i's
    network call; `step` from step i to i + 1 given the network's (guided) output."""

    timesteps: np.ndarray
    init_noise_sigma: np.float32

    def scale(self, sample: np.ndarray, i: int) -> np.ndarray: ...

    def step(self, model_output: np.ndarray, i: int, sample: np.ndarray) -> np.ndarray: ...


class Network(Protocol):
    """The model evaluated once per step: named inputs -> its raw prediction (first output).
    last_step: the loop's final evaluation (a streamed network returns its arena's memory to the
    OS before decoding). `loads` / `max_resident`: graphs it loaded so far and the most resident
    at once (they go into VideoStats). Optional, read by the driver when present: `block_evals`
    (UNet blocks run), `describe()` (a dict for VideoStats.step_cache) and `close()` (called when
    the denoising ends, also on an error)."""

    loads: int
    max_resident: int

    def run(self, inputs: dict[str, np.ndarray], last_step: bool = False) -> np.ndarray: ...


class StageObserver(Protocol):
    """Told when each driver stage ("encode", "denoise", "decode") starts and ends, e.g. to reset
    the process's memory high-water mark per stage (`edgekit bench video`)."""

    def begin(self, stage: str) -> None: ...

    def end(self, stage: str) -> None: ...


class VideoFamily(Protocol):
    """A video family: its stages and its scheduler, run by runtimes/video/driver.py `generate`.

    Constructed as `Family(manifest, backend, window)` (families.py `family_for`). Every method
    records what it did in `stats` (graphs loaded, decode tiles, ...); the driver records the
    stage times and memory.
    """

    name: ClassVar[str]
    frame_rate: int  # frames per second the written video plays at (the package's default)

    def request(self, **options: Any) -> Request:
        """Check the caller's options, fill unset ones from the package; InvalidArgumentError for
        bad input, before anything runs."""
        ...

    def schedule(self, steps: int) -> Schedule: ...

    def prepare(self, request: Any, stats: VideoStats) -> Prepared:
        """Stage "encode": the conditioning (encoded image or prompt, guidance) and the noise."""
        ...

    def network(self, request: Any) -> Network:
        """The package's own network for this request (the driver's default)."""
        ...

    def predict(self, network: Network, latents: np.ndarray, t: np.float32, prepared: Prepared,
                last_step: bool) -> np.ndarray:
        """Stage "denoise", one step: `latents` already scaled by the schedule -> what
        `schedule.step` takes (network inputs built from `prepared.state`, guidance applied)."""
        ...

    def decode(self, latents: np.ndarray, settings: DecodeSettings, stats: VideoStats) -> np.ndarray:
        """Stage "decode": denoised latents [1, F, C, h, w] -> float32 frames [F, H, W, 3] in [0, 1]."""
        ...


class OneGraph:
    """A `Network` that is one already-open session (the whole model as one graph), run with the
    caller's options. The caller opened it and releases it."""

    loads = 0
    max_resident = 1

    def __init__(self, session: Session) -> None:
        self.session = session

    def run(self, inputs: dict[str, np.ndarray], last_step: bool = False) -> np.ndarray:
        return self.session.run(inputs)[0]
