"""The video family contract as a story: a toy family (numpy stages, the shared Euler scheduler)
registered for the test -> the one driver runs it -> the frames equal a loop written out by
hand; its network swapped for a one-graph session -> that network's frames, same loop; stages
timed and observed in order. No torch, no package."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

from edgekit.runtimes.video.driver import VideoStats, generate
from edgekit.runtimes.video.families import VIDEO_FAMILIES, family_for, register_video_family
from edgekit.runtimes.video.family import DecodeSettings, OneGraph, Prepared
from edgekit.runtimes.video.scheduler import EulerScheduler

SCHEDULER = {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
             "beta_end": 0.012, "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 1}
SHAPE = (1, 3, 2, 4, 4)  # [1, F, C, h, w]


@dataclass(frozen=True)
class ToyRequest:
    num_frames: int
    height: int
    width: int
    steps: int
    decode: DecodeSettings
    latents: np.ndarray
    target: np.ndarray  # what the toy "encoder" conditions on
    guidance: float


class ToyNetwork:
    """A numpy 'denoiser': eps = weight * sample + bias * t / 1000 (counts its calls as loads)."""

    max_resident = 1

    def __init__(self, weight: float) -> None:
        self.weight, self.loads = np.float32(weight), 0

    def run(self, inputs: dict[str, np.ndarray], last_step: bool = False) -> np.ndarray:
        self.loads += 1
        return self.weight * inputs["sample"] + inputs["bias"] * (inputs["timestep"][:, None, None, None, None] / 1000)


class ToyFamily:
    name: ClassVar[str] = "toy"

    def __init__(self, manifest: Any, backend: Any, window: int) -> None:
        self.scheduler = EulerScheduler(SCHEDULER)

    def request(self, num_frames: int = 3, steps: int = 4, seed: int = 0, guidance: float = 2.0) -> ToyRequest:
        rng = np.random.default_rng(seed)
        latents = rng.standard_normal(SHAPE, dtype=np.float32)
        target = rng.standard_normal(SHAPE, dtype=np.float32)
        return ToyRequest(num_frames, 8, 8, steps, DecodeSettings(), latents, target, guidance)

    def schedule(self, steps: int) -> Any:
        return self.scheduler.schedule(steps)

    def prepare(self, request: ToyRequest, stats: VideoStats) -> Prepared:
        stats.guidance = True
        bias = np.concatenate([np.zeros_like(request.target), np.tanh(request.target)])  # [uncond, cond]
        return Prepared(latents=request.latents, state={"bias": bias, "scale": np.float32(request.guidance)})

    def network(self, request: ToyRequest) -> ToyNetwork:
        return ToyNetwork(0.1)

    def predict(self, network: Any, latents: np.ndarray, t: np.float32, prepared: Prepared,
                last_step: bool) -> np.ndarray:
        state = prepared.state
        out = network.run({"sample": np.concatenate([latents, latents]), "bias": state["bias"],
                           "timestep": np.full((2,), t, np.float32)}, last_step=last_step)
        return (out[:1] + state["scale"] * (out[1:] - out[:1])).astype(np.float32)

    def decode(self, latents: np.ndarray, settings: DecodeSettings, stats: VideoStats) -> np.ndarray:
        stats.decode_chunk = latents.shape[1]
        return (np.tanh(latents[0, :, :1]).transpose(0, 2, 3, 1).repeat(3, axis=-1) / 2 + 0.5).astype(np.float32)


def by_hand(request: ToyRequest, weight: float) -> np.ndarray:
    """The loop written out: Euler over the toy network with the guidance combination."""
    schedule = EulerScheduler(SCHEDULER).schedule(request.steps)
    x = (request.latents * schedule.init_noise_sigma).astype(np.float32)
    cond_bias = np.tanh(request.target)
    for i, t in enumerate(schedule.timesteps):
        scaled = schedule.scale(x, i)
        uncond = np.float32(weight) * scaled
        cond = np.float32(weight) * scaled + cond_bias * (t / 1000)
        x = schedule.step((uncond + np.float32(request.guidance) * (cond - uncond)).astype(np.float32), i, x)
    return x


@pytest.fixture
def toy() -> Any:
    register_video_family(ToyFamily)
    yield VIDEO_FAMILIES["toy"]
    VIDEO_FAMILIES.pop("toy")


def test_a_registered_toy_family_runs_through_the_driver(toy: Any) -> None:
    manifest = SimpleNamespace(family="toy", video=SimpleNamespace(), root="toy-pkg", task="video")
    family = family_for(manifest, backend=None, window=1)  # type: ignore[arg-type]
    request = family.request(steps=4, seed=3)
    seen: list[str] = []

    class Observer:
        def begin(self, stage: str) -> None:
            seen.append(f"begin {stage}")

        def end(self, stage: str) -> None:
            seen.append(f"end {stage}")

    reports: list[tuple[str, int, int]] = []
    result = generate(family, request, observers=[Observer()], progress=lambda m, d, t: reports.append((m, d, t)))
    expected = by_hand(request, 0.1)
    assert np.abs(result.latents - expected).max() <= 1e-6
    assert result.frames.shape == (3, 4, 4, 3) and result.frames.dtype == np.float32
    assert seen == [f"{when} {stage}" for stage in ("encode", "denoise", "decode") for when in ("begin", "end")]
    assert [r[1] for r in reports if r[0] == "denoising"] == [1, 2, 3, 4]
    stats = result.stats
    assert (stats.frames, stats.steps, stats.guidance, stats.decode_chunk) == (3, 4, True, 3)
    assert stats.graphs_loaded == 4 and stats.max_resident_graphs == 1  # from the network's counters
    assert set(stats.stage_peak_rss_mb) == set(stats.stage_start_rss_mb) == {"encode", "denoise", "decode"}
    assert min(stats.encode_ms, stats.denoise_ms, stats.decode_ms) > 0 and stats.latency_ms > 0


def test_the_network_is_swapped_without_copying_the_loop(toy: Any) -> None:
    """The bench's one-graph baseline in miniature: another network, a one-graph session."""

    class Session:  # one open "graph": the toy network with another weight
        input_names, output_names = ("sample", "bias", "timestep"), ("eps",)

        def run(self, feeds: dict[str, np.ndarray], shrink_arena: bool = False) -> list[np.ndarray]:
            return [ToyNetwork(0.3).run(feeds)]

        def release(self) -> None: ...

    family = toy(None, None, 1)
    request = family.request(steps=3, seed=1)
    swapped = generate(family, request, network=OneGraph(Session()))
    assert np.abs(swapped.latents - by_hand(request, 0.3)).max() <= 1e-6
    assert np.abs(generate(family, request).latents - by_hand(request, 0.1)).max() <= 1e-6
    assert swapped.stats.graphs_loaded == 0  # the caller opened the one graph


def test_the_manifest_check_reads_the_family_names_from_the_registry(toy: Any) -> None:
    from edgekit.video_manifest import VideoSection

    section = VideoSection.from_dict({"scheduler": SCHEDULER, "conditioning": {
        "num_frames": 2, "num_inference_steps": 2, "height": 8, "width": 8, "latent_channels": 4,
        "vae_scale_factor": 2, "scaling_factor": 0.18, "size_multiple": 8}})
    with pytest.raises(ValueError, match="video family 'cogvideox' is not one of"):
        section.check("cogvideox", lambda role: [], [])
    with pytest.raises(ValueError, match="exactly one 'image_encoder' graph"):  # "toy" is known: the next check
        section.check("toy", lambda role: [], [])
