"""Wan's causal VAE decoder, streamed, as stories: build the tiny Wan VAE from its config -> cut
its decoder into a first-chunk and a next-chunk graph with fixed-shape caches -> run them with the
torch-free decode loop -> compare with diffusers' `vae.decode`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")

import torch  # noqa: E402

from edgekit.errors import IntegrityError, InvalidArgumentError  # noqa: E402
from edgekit.exporters.wan_vae import (  # noqa: E402
    LOOP_TOLERANCE,
    TOLERANCE,
    FirstChunkDecoder,
    NextChunkDecoder,
    export_wan_decoder,
    export_whole_decoder,
)
from edgekit.manifest import GraphSpec  # noqa: E402
from edgekit.models.video_wan import TINY_VAE  # noqa: E402
from edgekit.runtimes.backends import backend_for  # noqa: E402
from edgekit.runtimes.video.wan_decode import WanDecoder, decode_latents, read_cache_names  # noqa: E402
from tests.test_runtime_without_torch import BLOCKER  # noqa: E402

EXACT = 1e-5
SQUARE, WIDE = (4, 4), (3, 5)  # latent sizes: 32x32 and 24x40 pixels


@pytest.fixture(scope="module")
def vae() -> Any:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    return AutoencoderKLWan(**TINY_VAE).eval()


@pytest.fixture(scope="module")
def exported(vae: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[GraphSpec], dict[str, float]]:
    """Both graphs exported once (about half a minute with the dynamo exporter on 2 cores)."""
    root = tmp_path_factory.mktemp("wan-vae")
    graphs, diffs = export_wan_decoder(vae, root, [SQUARE, WIDE], backend_for("onnx", "cpu"))
    return root, graphs, diffs


def _latents(frames: int, hw: tuple[int, int] = SQUARE, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, int(TINY_VAE["z_dim"]), frames, *hw, generator=torch.Generator().manual_seed(seed))


def _diffusers(vae: Any, latents: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        frames = vae.decode(latents).sample.numpy()
    assert np.abs(frames).max() < 1.0  # unsaturated: the clamp hides no difference
    return frames


def _sessions(root: Path, graphs: list[GraphSpec]) -> tuple[Any, Any]:
    backend = backend_for("onnx", "cpu")
    return backend.load(root / graphs[0].path), backend.load(root / graphs[1].path)


def _ort_decode(root: Path, graphs: list[GraphSpec], latents: np.ndarray, chunk: int) -> np.ndarray:
    first, next_ = _sessions(root, graphs)
    try:
        return decode_latents(first, next_, latents, chunk=chunk)
    finally:
        first.release()
        next_.release()


# --- torch side -----------------------------------------------------------------------------
def test_each_diffusers_cache_state_has_an_equal_two_frame_cache(vae: Any) -> None:
    """None (zero padding) = two zero frames; a 1-frame cache x0 = [0, x0]; "Rep" = zeros."""
    conv = vae.decoder.conv_in
    upsampler = next(m for m in vae.decoder.modules() if getattr(m, "mode", None) == "upsample3d")
    x0, x1 = _latents(1, seed=1), _latents(1, seed=2)
    zeros = torch.zeros_like(torch.cat([x0, x0], dim=2))
    with torch.no_grad():
        assert torch.equal(conv(x1), conv(x1, zeros))
        assert torch.equal(conv(x1, x0), conv(x1, torch.cat([torch.zeros_like(x0), x0], dim=2)))
        y = torch.randn(1, upsampler.dim, 1, 3, 3)
        assert torch.equal(upsampler.time_conv(y), upsampler.time_conv(y, torch.zeros(1, upsampler.dim, 2, 3, 3)))


@pytest.mark.parametrize("frames", [1, 2, 3, 5])
def test_chained_torch_wrappers_equal_diffusers_decode(vae: Any, frames: int) -> None:
    latents = _latents(frames, WIDE, batch=2)
    expected = _diffusers(vae, latents)
    with torch.no_grad():
        first = FirstChunkDecoder(vae)(latents[:, :, :1])
        chunks, caches = [first[0]], first[1:]
        for t in range(1, frames):
            out = NextChunkDecoder(vae)(latents[:, :, t:t + 1], *caches)
            chunks.append(out[0])
            caches = out[1:]
    got = torch.cat(chunks, dim=2).clamp(-1, 1).numpy()
    assert got.shape == expected.shape == (2, 3, 1 + 4 * (frames - 1), 24, 40)
    assert np.abs(got - expected).max() <= EXACT
    assert all(tuple(c.shape[:3]) == (2, c.shape[1], 2) for c in caches)  # every cache: 2 frames, fixed


def test_a_wan_22_residual_patchified_decoder_chains_exactly_too() -> None:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, decoder_base_dim=12, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                           temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
                           patch_size=2, latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    latents = torch.randn(1, 4, 4, 3, 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = vae.decode(latents).sample
        first = FirstChunkDecoder(vae)(latents[:, :, :1])
        rest = NextChunkDecoder(vae)(latents[:, :, 1:], *first[1:])
    got = torch.cat([first[0], rest[0]], dim=2).clamp(-1, 1)
    assert got.shape == expected.shape == (1, 3, 13, 48, 80)
    assert (got - expected).abs().max().item() <= EXACT


# --- export and the runtime loop ------------------------------------------------------------
def test_export_writes_two_graphs_with_matching_caches(exported: tuple[Path, list[GraphSpec], dict[str, float]]) -> None:
    root, (first, next_), diffs = exported
    assert (first.role, first.path, next_.role, next_.path) == (
        "vae_decoder_first", "graphs/vae_decoder_first.onnx", "vae_decoder_next", "graphs/vae_decoder_next.onnx")
    names = read_cache_names([t.name for t in next_.inputs], [t.name for t in first.outputs],
                             [t.name for t in next_.outputs])
    assert len(names) == 24 and names[0] == "cache_00"  # tiny VAE: conv_in, 10 residual blocks x 2, 2 upsamplers, conv_out
    assert [t.name for t in first.inputs] == ["latents"]
    shapes = {t.name: t.shape for t in next_.inputs}
    assert all(shapes[name][2] == 2 for name in names)  # static in time
    assert isinstance(shapes["latents"][2], str)  # T is dynamic in the next graph
    assert diffs["vae_decoder_first_max_abs_diff"] <= TOLERANCE and diffs["vae_decoder_next_max_abs_diff"] <= TOLERANCE
    assert diffs["loop_chunk_1_max_abs_diff"] <= LOOP_TOLERANCE and diffs["loop_chunk_2_max_abs_diff"] <= LOOP_TOLERANCE
    assert all((root / f.file).stat().st_size == f.bytes for g in (first, next_) for f in g.files)


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_streamed_ort_decode_equals_diffusers(vae: Any, exported: tuple[Path, list[GraphSpec], dict[str, float]],
                                              chunk: int) -> None:
    root, graphs, _ = exported
    latents = _latents(5, seed=chunk)
    got = _ort_decode(root, graphs, latents.numpy(), chunk)
    assert got.shape == (1, 3, 17, 32, 32)
    assert np.abs(got - _diffusers(vae, latents)).max() <= EXACT


def test_streamed_ort_decode_at_a_non_square_size_and_batch_2(
        vae: Any, exported: tuple[Path, list[GraphSpec], dict[str, float]]) -> None:
    root, graphs, _ = exported
    latents = _latents(4, (5, 3), batch=2, seed=9)  # neither size was an export example
    got = _ort_decode(root, graphs, latents.numpy(), chunk=2)  # chunks of 2 then 1
    assert got.shape == (2, 3, 13, 40, 24)
    assert np.abs(got - _diffusers(vae, latents)).max() <= EXACT


def test_chunked_decode_equals_per_frame_decode(exported: tuple[Path, list[GraphSpec], dict[str, float]]) -> None:
    root, graphs, _ = exported
    latents = _latents(6, WIDE, seed=4).numpy()
    per_frame = _ort_decode(root, graphs, latents, chunk=1)
    for chunk in (2, 5):
        assert np.abs(_ort_decode(root, graphs, latents, chunk) - per_frame).max() <= EXACT


def test_wan_decoder_loads_one_graph_at_a_time_and_releases_all(
        vae: Any, exported: tuple[Path, list[GraphSpec], dict[str, float]]) -> None:
    root, (first, next_), _ = exported
    backend = backend_for("onnx", "cpu")
    live: list[str] = []
    peak = [0]

    class Counted:
        def __init__(self, path: Path) -> None:
            self.inner, self.name = backend.load(path), path.name
            self.input_names, self.output_names = self.inner.input_names, self.inner.output_names
            live.append(self.name)
            peak[0] = max(peak[0], len(live))

        def run(self, feeds: dict[str, np.ndarray], shrink_arena: bool = False) -> list[np.ndarray]:
            return self.inner.run(feeds, shrink_arena)

        def release(self) -> None:
            live.remove(self.name)
            self.inner.release()

    decoder = WanDecoder(first, next_, root, Counted)
    latents = _latents(3, seed=5)
    frames = decoder.decode(latents.numpy(), chunk=2)
    assert np.abs(frames - _diffusers(vae, latents)).max() <= EXACT
    assert (decoder.loads, live, peak[0]) == (2, [], 1)
    decoder.decode(latents[:, :, :1].numpy())  # one latent frame: the next-chunk graph is never loaded
    assert (decoder.loads, live) == (3, [])


@pytest.mark.parametrize(("latents", "needle"), [
    (np.zeros((16, 3, 4, 4), np.float32), "5-D"),
    (np.zeros((1, 8, 2, 4, 4), np.float32), "8 channels"),
    (np.zeros((1, 16, 2, 4, 4), np.int64), "float"),
    ([[0.0]], "float numpy array"),
])
def test_bad_latents_are_one_line_errors(exported: tuple[Path, list[GraphSpec], dict[str, float]],
                                         latents: Any, needle: str) -> None:
    root, (first, next_), _ = exported
    decoder = WanDecoder(first, next_, root, backend_for("onnx", "cpu").load)
    with pytest.raises(InvalidArgumentError, match=needle) as error:
        decoder.decode(latents)
    assert "\n" not in str(error.value) and decoder.loads == 0
    with pytest.raises(InvalidArgumentError, match="chunk"):
        decoder.decode(np.zeros((1, 16, 2, 4, 4), np.float32), chunk=0)


def test_a_graph_without_a_cache_output_is_refused() -> None:
    with pytest.raises(IntegrityError, match="cache_01_out"):
        read_cache_names(["latents", "cache_00", "cache_01"], ["frames", "cache_00_out", "cache_01_out"],
                         ["frames", "cache_00_out"])


def test_streamed_decode_runs_with_torch_blocked(vae: Any, exported: tuple[Path, list[GraphSpec], dict[str, float]],
                                                 tmp_path: Path) -> None:
    root, (first, next_), _ = exported
    latents = _latents(3, seed=6)
    np.save(tmp_path / "latents.npy", latents.numpy())
    code = BLOCKER + textwrap.dedent(f"""
        import json, sys, numpy as np
        from pathlib import Path
        from edgekit.manifest import GraphSpec
        from edgekit.runtimes.backends import backend_for
        from edgekit.runtimes.video.wan_decode import WanDecoder
        load = backend_for("onnx", "cpu").load
        first = GraphSpec.from_dict(json.loads({json.dumps(json.dumps(first.to_dict()))}))
        next_ = GraphSpec.from_dict(json.loads({json.dumps(json.dumps(next_.to_dict()))}))
        frames = WanDecoder(first, next_, Path({str(root)!r}), load).decode(np.load({str(tmp_path / "latents.npy")!r}))
        np.save({str(tmp_path / "frames.npy")!r}, frames)
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    assert np.abs(np.load(tmp_path / "frames.npy") - _diffusers(vae, latents)).max() <= EXACT


def test_whole_decoder_graph_is_diffusers_decode(vae: Any, tmp_path: Path) -> None:
    latents = _latents(2, seed=8)
    spec = export_whole_decoder(vae, tmp_path, (1, 16, 2, 4, 4))
    session = backend_for("onnx", "cpu").load(tmp_path / spec.path)
    try:
        (got,) = session.run({"latents": latents.numpy()})
    finally:
        session.release()
    assert (spec.role, got.shape) == ("vae_decoder_whole", (1, 3, 5, 32, 32))
    assert np.abs(got - _diffusers(vae, latents)).max() <= EXACT
