"""The Feature Slicer, as stories: build a tiny random SVD -> export its UNet as operator groups
(`edgekit export --task video --op-groups`) -> run with each group split along its axis -> the
frames equal the unsliced run (<= 1e-5) and diffusers (<= 1e-3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("diffusers")

import torch  # noqa: E402

from edgekit.cli import app  # noqa: E402
from edgekit.errors import InvalidArgumentError, NotAPackageError  # noqa: E402
from edgekit.manifest import Manifest  # noqa: E402

runner = CliRunner()
FRAMES, SIZE = 4, 32
OPTIONS = {"min_guidance_scale": 1.0, "max_guidance_scale": 2.5, "fps": 7, "motion_bucket_id": 127,
           "noise_aug_strength": 0.02}


def _export(source: Path, out: Path, *extra: str) -> Path:
    result = runner.invoke(app, ["export", str(source), "--task", "video", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def grouped(tiny_svd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tiny_svd, tmp_path_factory.mktemp("grouped") / "pkg", "--op-groups")


@pytest.fixture(scope="module")
def blocks(svd_package: Path) -> Path:
    return svd_package  # the session's block package (conftest), exported the same way; only read here


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(100))
    latents = torch.randn(1, FRAMES, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(200))
    noise = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    return image, latents, noise


# --- export ------------------------------------------------------------------------------
def test_groups_record_their_axis_and_why_slicing_is_exact(grouped: Path) -> None:
    manifest = Manifest.load(grouped)
    manifest.verify()
    groups = manifest.graphs_by_role("unet_group")
    assert [g.index for g in groups] == list(range(len(groups))) and len(groups) == len(manifest.video.op_groups)
    assert [g.role for g in manifest.graphs[:3]] == ["image_encoder", "vae_encoder", "time_embedding"]
    axes = {name: group.axis for name, group in manifest.video.op_groups.items()}
    assert set(axes.values()) == {"frames", "pixels", "videos"}
    for name, group in manifest.video.op_groups.items():
        assert group.exact and group.ops and group.block == name.split(".")[0]
        for op in group.ops:  # no GroupNorm statistics split: each kind of op sits on its exact axis
            if op.endswith("temporal_res_block"):
                assert group.axis == "videos", (name, op)
            elif ".temporal_transformer_blocks." in op:
                assert group.axis == "pixels", (name, op)
            else:
                assert group.axis == "frames", (name, op)
    pixels = next(g for g in manifest.video.op_groups.values() if g.axis == "pixels")
    assert pixels.inputs == {"tokens": 1} and pixels.outputs == {"tokens_out": 1}
    parity = manifest.parity
    assert parity["unet_chained_max_abs_diff"] <= 1e-4
    assert parity["sliced_vs_unsliced_max_abs_diff"] <= 1e-5 and parity["slices_checked"] == 3
    inspected = runner.invoke(app, ["inspect", str(grouped)])
    assert inspected.exit_code == 0 and f"operator groups: {len(groups)}" in inspected.stdout
    assert "EulerDiscreteScheduler" in inspected.stdout


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda d, g: d["video"]["op_groups"][g].update(axis="channels"), "slice axis 'channels'"),
    (lambda d, g: d["video"]["op_groups"][g]["inputs"].update(not_an_input=0), "not_an_input"),
    (lambda d, g: d["video"].update(op_groups=[]), "op_groups must be an object"),
    (lambda d, g: d["video"]["op_groups"][g].update(inputs=["hidden_states"]), "integer dimensions"),
    (lambda d, g: d["video"]["op_groups"][g].update(outputs=None), "integer dimensions"),
    (lambda d, g: d["video"]["op_groups"][g].update(ops="abc"), "list of module names"),
    (lambda d, g: d["video"]["op_groups"][g]["inputs"].update(hidden_states=True), "integer dimensions"),
])
def test_a_malformed_op_group_is_refused_in_one_line(grouped: Path, tmp_path: Path, edit, needle: str) -> None:
    data = json.loads((grouped / "manifest.json").read_text())
    edit(data, next(iter(data["video"]["op_groups"])))
    with pytest.raises(NotAPackageError, match="malformed") as caught:
        Manifest.from_dict(data, tmp_path)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_group_split_on_the_wrong_dimension_is_refused(grouped: Path, tmp_path: Path) -> None:
    """The runtime's unit rule needs videos groups to split image_only_indicator and pixels groups
    to split dimension 1: a manifest saying otherwise would run wrong slices, so it is refused."""
    data = json.loads((grouped / "manifest.json").read_text())
    videos = next(name for name, g in data["video"]["op_groups"].items() if g["axis"] == "videos")
    del data["video"]["op_groups"][videos]["inputs"]["image_only_indicator"]
    with pytest.raises(NotAPackageError, match="must split image_only_indicator"):
        Manifest.from_dict(data, tmp_path)
    data = json.loads((grouped / "manifest.json").read_text())
    pixels = next(name for name, g in data["video"]["op_groups"].items() if g["axis"] == "pixels")
    data["video"]["op_groups"][pixels]["inputs"]["tokens"] = 0
    with pytest.raises(NotAPackageError, match="splits dimension 1"):
        Manifest.from_dict(data, tmp_path)


def test_tensors_are_dropped_once_dead(grouped: Path) -> None:
    """Liveness over one step: a transformer's tokens die with its last group, a skip with its
    consumer, and only noise_pred survives the last graph."""
    from edgekit.runtimes.video.unet import live_names

    manifest = Manifest.load(grouped)
    graphs = manifest.unet_graphs
    live = live_names(graphs)
    for graph, after in zip(graphs, live):
        ops = manifest.video.op_groups[graph.name].ops if graph.name in manifest.video.op_groups else ()
        if any(op.endswith(".proj_out") for op in ops):
            assert "tokens" not in after, graph.name
        for spec in graph.inputs:
            if spec.name.startswith("skip_"):
                assert spec.name not in after, graph.name
    assert live[-1] == frozenset()
    assert all("hidden_states" in after for after in live[1:-1])


# --- generation ----------------------------------------------------------------------------
def test_sliced_equals_unsliced_and_matches_diffusers(grouped: Path, blocks: Path, tiny_svd: Path) -> None:
    from diffusers import StableVideoDiffusionPipeline

    import edgekit

    image, latents, noise = _inputs()
    pixels = image[0].permute(1, 2, 0).numpy()

    def generate(package: Path, slices: int | None) -> np.ndarray:
        pipeline = edgekit.load(str(package))
        frames = pipeline.generate(pixels, num_frames=FRAMES, steps=2, height=SIZE, width=SIZE,
                                   latents=latents.numpy(), noise=noise.numpy(), slices=slices, **OPTIONS)
        assert pipeline.stats.slices == (slices or 1)
        return frames

    unsliced = generate(grouped, None)
    for slices in (2, 3):  # even and uneven splits of every axis
        diff = float(np.abs(generate(grouped, slices) - unsliced).max())
        print(f"sliced {slices} vs unsliced: {diff:.3g}")
        assert diff <= 1e-5
    assert float(np.abs(generate(blocks, None) - unsliced).max()) <= 1e-5  # groups == blocks
    reference = StableVideoDiffusionPipeline.from_pretrained(tiny_svd)
    reference.set_progress_bar_config(disable=True)
    expected = reference(image, height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=2,
                         generator=torch.Generator().manual_seed(0), latents=latents.clone(), output_type="np",
                         **OPTIONS).frames[0]
    assert float(np.abs(unsliced - expected).max()) <= 1e-3


def test_every_axis_sliced_down_to_single_units_stays_within_1e5(grouped: Path) -> None:
    """One UNet evaluation with only one axis sliced, up to one unit per slice (slices above the
    unit count are capped). One-frame slices take another kernel path in onnxruntime (measured:
    1.4e-6 on noise_pred of max ~1.8), which is rounding, not an approximation."""
    from edgekit.runtimes.backends import backend_for
    from edgekit.runtimes.video.unet import run_unet, unet_state

    manifest = Manifest.load(grouped)
    backend = backend_for("onnx", "cpu")
    rng = np.random.default_rng(0)
    batch, latent = 2, SIZE // 2
    sample = rng.standard_normal((batch, FRAMES, 8, latent, latent), dtype=np.float32)
    context = rng.standard_normal((batch, 1, 32), dtype=np.float32)
    time_ids = np.array([[6, 127, 0.02]] * batch, dtype=np.float32)

    def noise_pred(groups: dict, slices: int) -> np.ndarray:
        state = unet_state(sample, np.full((batch,), 1.6, np.float32), context, time_ids)
        return run_unet(manifest.unet_graphs, manifest.root, backend.load, 2, state, op_groups=groups, slices=slices)

    unsliced = noise_pred(manifest.video.op_groups, 1)
    for axis in ("frames", "pixels", "videos"):
        groups = {name: g for name, g in manifest.video.op_groups.items() if g.axis == axis}
        for slices in (4, latent * latent * 2):
            diff = float(np.abs(noise_pred(groups, slices) - unsliced).max())
            print(f"{axis} x{slices}: {diff:.3g}")
            assert diff <= 1e-5, (axis, slices, diff)


def test_each_group_really_runs_in_slices_along_its_axis(grouped: Path) -> None:
    import edgekit
    from edgekit.runtimes.backends import backend_for

    calls: dict[str, list[dict[str, tuple[int, ...]]]] = {}

    class Recording:  # a session that records the shapes it is fed
        def __init__(self, path: Path) -> None:
            self.name, self.session = Path(path).stem, backend_for("onnx", "cpu").load(path)
            self.input_names, self.output_names = self.session.input_names, self.session.output_names

        def run(self, feeds: dict[str, np.ndarray], shrink_arena: bool = False) -> list[np.ndarray]:
            calls.setdefault(self.name, []).append({k: v.shape for k, v in feeds.items()})
            return self.session.run(feeds, shrink_arena=shrink_arena)

        def release(self) -> None:
            self.session.release()

    class RecordingBackend:
        load = Recording

    pipeline = edgekit.load(str(grouped))
    pipeline.backend = RecordingBackend()  # type: ignore[assignment]
    pipeline.generate(np.zeros((SIZE, SIZE, 3), np.float32), num_frames=FRAMES, steps=1, slices=2, seed=0)
    pipeline.generate(np.zeros((SIZE, SIZE, 3), np.float32), num_frames=FRAMES, steps=1, slices=1, seed=0)
    for name, group in Manifest.load(grouped).video.op_groups.items():
        sliced, whole = calls[name][:2], calls[name][2]  # slices=2 first, then the unsliced run
        assert len(calls[name]) == 3, name
        for tensor, dim in group.inputs.items():
            sizes = [run[tensor][dim] for run in sliced]
            assert sum(sizes) == whole[tensor][dim] and sizes[0] == sizes[1], (name, tensor, sizes)
        if group.axis == "videos":  # whole videos: all F frames of one video per slice
            assert [run["image_only_indicator"] for run in sliced] == [(1, FRAMES)] * 2


def test_cli_run_with_slices_reports_them(grouped: Path, tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (SIZE, SIZE), (120, 60, 200)).save(tmp_path / "in.png")
    result = runner.invoke(app, ["run", str(grouped), "--image", str(tmp_path / "in.png"), "--frames", "2",
                                 "--steps", "1", "--slices", "2", "--out", str(tmp_path / "o.gif"), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)["stats"]
    assert stats["slices"] == 2 and stats["op_groups"] == len(Manifest.load(grouped).video.op_groups)


# --- bad input -----------------------------------------------------------------------------
def test_slices_on_a_block_package_or_below_one_are_clear_errors(blocks: Path, grouped: Path, tmp_path: Path) -> None:
    from PIL import Image

    import edgekit

    Image.new("RGB", (SIZE, SIZE)).save(tmp_path / "in.png")
    result = runner.invoke(app, ["run", str(blocks), "--image", str(tmp_path / "in.png"), "--steps", "1",
                                 "--slices", "2", "--out", str(tmp_path / "o.gif")])
    message = result.stderr.strip()
    assert result.exit_code == 2 and "no operator groups" in message and "--op-groups" in message
    assert "\n" not in message
    with pytest.raises(InvalidArgumentError, match="slices must be a positive integer"):
        edgekit.load(str(grouped)).generate(np.zeros((SIZE, SIZE, 3), np.float32), num_frames=2, steps=1, slices=0)
    result = runner.invoke(app, ["export", str(blocks), "--out", str(tmp_path / "p"), "--op-groups"])
    assert result.exit_code == 2 and "--op-groups is for --task video" in result.stderr
