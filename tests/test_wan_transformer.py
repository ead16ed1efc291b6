"""Wan's text encoder and DiT as stage graphs, as stories: build the tiny Wan pipeline -> export
its text encoder and transformer stages -> run them with the torch-free runtime (StreamedDiT,
numpy rope tables and unpatchify) -> compare with diffusers and transformers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")

import torch  # noqa: E402

from edgekit.errors import InvalidArgumentError  # noqa: E402
from edgekit.exporters.wan_transformer import (  # noqa: E402
    CHAINED,
    TOLERANCE,
    EmbedStage,
    HeadStage,
    WanShape,
    export_wan_transformer,
    export_whole_transformer,
    streamed_dit,
)
from edgekit.runtimes.backends import backend_for  # noqa: E402
from edgekit.runtimes.video.dit import StreamedDiT  # noqa: E402
from edgekit.runtimes.video.wan_rope import rope_tables, unpatchify  # noqa: E402
from tests.test_runtime_without_torch import BLOCKER  # noqa: E402

SHAPES = [WanShape(batch=2, text_length=7, frames=3, height=4, width=6),
          WanShape(batch=1, text_length=5, frames=2, height=6, width=4)]


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory: pytest.TempPathFactory):
    """(transformer, text_encoder) of the tiny Wan pipeline, loaded from its saved directory."""
    from diffusers import WanTransformer3DModel
    from transformers import UMT5EncoderModel

    from edgekit.models.video_wan import build_tiny_wan

    path = build_tiny_wan(tmp_path_factory.mktemp("tiny-wan"))
    transformer = WanTransformer3DModel.from_pretrained(path / "transformer").eval()
    text_encoder = UMT5EncoderModel.from_pretrained(path / "text_encoder").eval()
    return transformer, text_encoder


@pytest.fixture(scope="module")
def exported(tiny_wan, tmp_path_factory: pytest.TempPathFactory):
    """(root, graphs, diffs) of the exported stages."""
    transformer, text_encoder = tiny_wan
    root = tmp_path_factory.mktemp("wan-stages")
    graphs, diffs = export_wan_transformer(text_encoder, transformer, root, SHAPES, backend_for("onnx", "cpu"))
    return root, graphs, diffs


class CountingLoad:
    """A backend's `load` that counts the sessions alive (loaded, not yet released)."""

    def __init__(self) -> None:
        self.backend = backend_for("onnx", "cpu")
        self.alive = 0
        self.most_alive = 0

    def __call__(self, path: Path):
        session = self.backend.load(path)
        self.alive += 1
        self.most_alive = max(self.most_alive, self.alive)
        release = session.release

        def counted_release() -> None:
            self.alive -= 1
            release()

        session.release = counted_release
        return session


def _dit_inputs(transformer, batch: int, text_length: int, frames: int, height: int, width: int, seed: int = 3):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 16, frames, height, width, generator=generator)
    timestep = torch.tensor([999.0, 500.0][:batch])
    context = torch.randn(batch, text_length, int(transformer.config.text_dim), generator=generator)
    with torch.no_grad():
        expected = transformer(latents, timestep, context, return_dict=False)[0].numpy()
    inputs = {"latents": latents.numpy(), "timestep": timestep.numpy(), "encoder_hidden_states": context.numpy()}
    return inputs, expected


def _network(transformer, graphs, root: Path, load, window: int) -> StreamedDiT:
    dit = [graph for graph in graphs if graph.role.startswith("dit_")]
    config = transformer.config
    return StreamedDiT(dit[0], dit[1:-1], dit[-1], root, load, window, patch_size=config.patch_size,
                       attention_head_dim=config.attention_head_dim, rope_max_seq_len=config.rope_max_seq_len)


# --- export --------------------------------------------------------------------------------
def test_export_writes_every_stage_with_dynamic_axes_and_torch_parity(exported) -> None:
    root, graphs, diffs = exported
    assert [(g.name, g.role, g.index) for g in graphs] == [
        ("text_encoder", "text_encoder", None), ("dit_embed", "dit_embed", None),
        ("dit_block_00", "dit_block", 0), ("dit_block_01", "dit_block", 1), ("dit_head", "dit_head", None)]
    assert [g.path for g in graphs] == ["graphs/text_encoder.onnx", "graphs/dit_embed.onnx",
                                        "graphs/dit_block_00.onnx", "graphs/dit_block_01.onnx", "graphs/dit_head.onnx"]
    for graph in graphs:
        assert all((root / entry.file).is_file() for entry in graph.files)
    block = {spec.name: spec.shape for spec in graphs[2].inputs}
    assert block["hidden_states"] == ("batch", "tokens", 24)
    assert block["context"] == ("batch", "text_length", 24)
    assert block["rope_cos"] == (1, "tokens", 1, 12)
    embed = {spec.name: spec.shape for spec in graphs[1].inputs}
    assert embed["latents"] == ("batch", 16, "frames", "latent_height", "latent_width")
    assert [spec.name for spec in graphs[1].outputs] == ["hidden_states", "temb", "timestep_proj", "context"]
    assert [spec.name for spec in graphs[4].outputs] == ["patches"]
    assert set(diffs) == {g.name for g in graphs} | {CHAINED}
    assert all(0.0 <= diff <= TOLERANCE for diff in diffs.values()), diffs


def test_text_encoder_graph_equals_umt5_with_a_padded_mask(tiny_wan, exported) -> None:
    _, text_encoder = tiny_wan
    root, graphs, _ = exported
    ids = torch.randint(2, 64, (3, 9), generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5, [1] * 1 + [0] * 8])
    ids = ids * mask
    with torch.no_grad():
        expected = text_encoder(ids, mask).last_hidden_state.numpy()
    session = backend_for("onnx", "cpu").load(root / graphs[0].path)
    try:
        (actual,) = session.run({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    finally:
        session.release()
    assert actual.shape == (3, 9, 32)
    assert np.max(np.abs(actual - expected)) <= 1e-4


# --- the streamed DiT ----------------------------------------------------------------------
@pytest.mark.parametrize("frames, height, width", [(3, 4, 6), (1, 8, 4)])
def test_streamed_dit_equals_diffusers_transformer_for_a_cfg_batch(tiny_wan, exported, frames, height,
                                                                   width) -> None:
    transformer, _ = tiny_wan
    root, graphs, _ = exported
    inputs, expected = _dit_inputs(transformer, 2, 9, frames, height, width)
    results = {}
    for window in (1, 2):
        load = CountingLoad()
        network = _network(transformer, graphs, root, load, window)
        results[window] = network.run(inputs, last_step=window == 2)
        assert network.max_resident <= window and load.most_alive <= window
        assert load.alive == 0  # every session released
        assert network.loads == 4 and network.block_evals == 2
    assert results[1].shape == expected.shape == (2, 16, frames, height, width)
    assert np.max(np.abs(results[1] - expected)) <= 1e-4
    np.testing.assert_array_equal(results[1], results[2])


def test_streamed_dit_caches_rope_tables_per_shape_and_streams_any_subsequence(tiny_wan, exported) -> None:
    transformer, _ = tiny_wan
    root, graphs, _ = exported
    network = streamed_dit(transformer, graphs, root, backend_for("onnx", "cpu"), window=1)
    inputs, expected = _dit_inputs(transformer, 2, 6, 3, 4, 6, seed=8)
    # First-Block-Cache's shape: embed + block 0, then the remaining blocks + head, over one state
    state = network.state(inputs)
    network.stream(network.graphs[:2], state)
    after_first_block = state["hidden_states"].copy()
    network.stream(network.graphs[2:], state, last_step=True)
    split = network.finish(state)
    assert np.max(np.abs(split - expected)) <= 1e-4
    assert not np.array_equal(after_first_block, state["hidden_states"])
    np.testing.assert_array_equal(network.run(inputs), split)
    assert network.rope(3, 4, 6)[0] is state["rope_cos"]  # computed once for this shape
    assert network.block_evals == 4 and network.max_resident == 1


def test_too_large_a_video_is_a_one_line_error_before_any_graph_loads(tiny_wan, exported) -> None:
    transformer, _ = tiny_wan
    root, graphs, _ = exported
    load = CountingLoad()
    network = _network(transformer, graphs, root, load, 2)
    inputs, _ = _dit_inputs(transformer, 1, 4, 1, 4, 4)
    inputs["latents"] = np.zeros((1, 16, 1, 4, 66), dtype=np.float32)  # 33 positions > rope_max_seq_len 32
    with pytest.raises(InvalidArgumentError, match="rope_max_seq_len 32") as error:
        network.run(inputs)
    assert "\n" not in str(error.value)
    assert load.most_alive == 0 and network.loads == 0


# --- numpy rope and unpatchify -------------------------------------------------------------
@pytest.mark.parametrize("head_dim, patch, max_len, frames, height, width", [
    (12, (1, 2, 2), 32, 3, 4, 6), (128, (1, 2, 2), 1024, 21, 60, 104), (20, (2, 2, 2), 16, 4, 8, 2)])
def test_rope_tables_equal_diffusers(head_dim, patch, max_len, frames, height, width) -> None:
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    expected = WanRotaryPosEmbed(head_dim, patch, max_len)(torch.zeros(1, 1, frames, height, width))
    actual = rope_tables(head_dim, patch, max_len, frames, height, width)
    for got, want in zip(actual, expected):
        assert got.dtype == np.float32 and got.shape == tuple(want.shape)
        assert np.max(np.abs(got - want.numpy())) <= 1e-6


@pytest.mark.parametrize("frames, height, width, patch, message", [
    (2, 4, 66, (1, 2, 2), "width gives 33 positions"), (3, 4, 4, (2, 2, 2), "frames 3 is not a positive multiple"),
    (1, 5, 4, (1, 2, 2), "height 5 is not")])
def test_rope_rejects_sizes_in_one_line(frames, height, width, patch, message) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as error:
        rope_tables(12, patch, 32, frames, height, width)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 2, 2)])
def test_unpatchify_equals_the_end_of_diffusers_forward(patch) -> None:
    """The torch embed -> blocks -> head stages give patches; unpatchify(patches) must be the
    whole transformer's output (the same torch kernels, so equal up to float rounding)."""
    from diffusers import WanTransformer3DModel

    from edgekit.models.video_wan import TINY_TRANSFORMER

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**{**TINY_TRANSFORMER, "patch_size": patch, "num_layers": 1}).eval()
    latents = torch.randn(2, 16, 4, 6, 4)
    timestep, context = torch.tensor([10.0, 700.0]), torch.randn(2, 3, 32)
    with torch.no_grad():
        expected = transformer(latents, timestep, context, return_dict=False)[0].numpy()
        hidden, temb, timestep_proj, embedded = EmbedStage(transformer)(latents, timestep, context)
        hidden = transformer.blocks[0](hidden, embedded, timestep_proj, transformer.rope(latents))
        patches = HeadStage(transformer)(hidden, temb).numpy()
    assert patches.shape == (2, 4 // patch[0] * 3 * 2, 16 * patch[0] * 4)
    actual = unpatchify(patches, patch, 4, 6, 4)
    assert actual.shape == expected.shape == (2, 16, 4, 6, 4)
    assert np.max(np.abs(actual - expected)) <= 1e-6


# --- the one-graph baseline and the runtime's imports --------------------------------------
def test_whole_transformer_exports_as_one_dynamic_graph(tiny_wan, tmp_path: Path) -> None:
    transformer, _ = tiny_wan
    graph, diff = export_whole_transformer(transformer, tmp_path, SHAPES, backend_for("onnx", "cpu"))
    assert graph.role == "transformer" and graph.path == "graphs/transformer.onnx"
    assert graph.inputs[0].shape == ("batch", 16, "frames", "latent_height", "latent_width")
    assert diff <= TOLERANCE


def test_dit_runtime_imports_without_torch() -> None:
    code = BLOCKER + textwrap.dedent("""
        import sys
        import edgekit.runtimes.video.dit, edgekit.runtimes.video.wan_rope
        print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
