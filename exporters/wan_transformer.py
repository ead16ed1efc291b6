"""Wan 2.1's text encoder and DiT transformer as per-stage ONNX graphs (text-to-video path).

Each stage wrapper's forward is exactly the slice of diffusers' code it replaces
(`WanTransformer3DModel.forward` with a [B] timestep and no image embeddings; UMT5's encoder):

    text_encoder  input_ids, attention_mask -> prompt_embeds            (UMT5 last_hidden_state)
    dit_embed     latents, timestep, encoder_hidden_states
                  -> hidden_states, temb, timestep_proj, context        (patch + condition embedding)
    dit_block i   hidden_states, context, timestep_proj, rope_cos, rope_sin -> hidden_states_out
    dit_head      hidden_states, temb -> patches                        (norm_out, scale/shift, proj_out)

The rotary tables and the unpatchify reshape are the runtime's numpy
(runtimes/video/wan_rope.py), so no graph bakes a token count. The DiT graphs are written with
torch.onnx's dynamo exporter (the TorchScript one fails on Wan's rms_norm); the text encoder with
the TorchScript one (dynamo fails decomposing UMT5's attention-output reshape with a symbolic
batch: "Cannot view a tensor ... as a tensor with shape (s72, s53, 32)"; TorchScript exports it in
~0.1 s, 1e-6 from torch). Every graph has dynamic batch, text length, frames, latent
height/width and tokens (the embed graph's token dim carries dynamo's own expression,
`frames*((latent_height//2))*((latent_width//2))`), and is checked against its torch module with
onnxruntime at two shapes, and the chained graphs, run by the runtime's own `StreamedDiT`, are
checked against diffusers' whole transformer. `WholeTransformer` is the one-graph baseline the
bench exports (`export_whole_transformer`); packages do not hold it.

Example::

    specs, diffs = export_wan_transformer(text_encoder, transformer, staging,
                                          [WanShape(2, 7, 3, 4, 6), WanShape(1, 5, 2, 6, 4)], backend)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from edgekit.errors import InvalidArgumentError
from edgekit.exporters.package_parts import StagePlan, check_parity, max_diff
from edgekit.manifest import GraphSpec
from edgekit.runtimes.backends import Backend
from edgekit.runtimes.video.dit import StreamedDiT

TOLERANCE = 1e-4  # per graph and chained, relative to max(1, max |reference|) (as video_svd)
CHAINED = "dit_chained"  # the key of the chained check in the returned diffs


class WanShape(NamedTuple):
    """One example input shape: batch, text length, latent frames, latent height, latent width."""

    batch: int
    text_length: int
    frames: int
    height: int
    width: int


# --- stage wrappers ------------------------------------------------------------------------
class TextEncoderStage(torch.nn.Module):
    """UMT5 encoder: input_ids [B, L], attention_mask [B, L] (int64) -> prompt_embeds [B, L, D]
    (last_hidden_state; positions past the prompt are zeroed by the runtime, as the pipeline's
    `_get_t5_prompt_embeds` does)."""

    def __init__(self, text_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids, attention_mask).last_hidden_state


class EmbedStage(torch.nn.Module):
    """Patch embedding and condition embedding: latents [B, C, F, h, w], timestep [B],
    encoder_hidden_states [B, L, text_dim] -> hidden_states [B, S, D], temb [B, D],
    timestep_proj [B, 6, D], context [B, L, D]."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.patch_embedding = transformer.patch_embedding
        self.condition_embedder = transformer.condition_embedder

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden_states = self.patch_embedding(latents).flatten(2).transpose(1, 2).contiguous()
        temb, timestep_proj, context, _ = self.condition_embedder(timestep, encoder_hidden_states, None)
        return hidden_states, temb, timestep_proj.unflatten(1, (6, -1)), context


class BlockStage(torch.nn.Module):
    """Transformer block i: hidden_states [B, S, D], context [B, L, D], timestep_proj [B, 6, D],
    rope_cos / rope_sin [1, S, 1, head_dim] -> hidden_states_out [B, S, D]."""

    def __init__(self, transformer: torch.nn.Module, index: int) -> None:
        super().__init__()
        self.block = transformer.blocks[index]

    def forward(self, hidden_states: torch.Tensor, context: torch.Tensor, timestep_proj: torch.Tensor,
                rope_cos: torch.Tensor, rope_sin: torch.Tensor) -> torch.Tensor:
        return self.block(hidden_states, context, timestep_proj, (rope_cos, rope_sin))


class HeadStage(torch.nn.Module):
    """Output norm, scale/shift and projection: hidden_states [B, S, D], temb [B, D] -> patches
    [B, S, out_channels * prod(patch_size)] (the runtime unpatchifies)."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.norm_out = transformer.norm_out
        self.proj_out = transformer.proj_out
        self.scale_shift_table = transformer.scale_shift_table

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        return self.proj_out(hidden_states)


class WholeTransformer(torch.nn.Module):
    """The whole transformer as one graph: latents, timestep, encoder_hidden_states -> noise_pred."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.transformer(latents, timestep, encoder_hidden_states, return_dict=False)[0]


# --- plans ---------------------------------------------------------------------------------
TOKENS = {0: "batch", 1: "tokens"}
TEXT = {0: "batch", 1: "text_length"}
LATENTS = {0: "batch", 2: "frames", 3: "latent_height", 4: "latent_width"}
ROPE = {1: "tokens"}
BATCH = {0: "batch"}


def text_encoder_example(shape: WanShape, vocab_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Token ids [B, L] and a padded attention mask: prompt k holds L - k tokens (at least 1)."""
    ids = torch.randint(2, vocab_size, (shape.batch, shape.text_length), generator=generator)
    lengths = torch.tensor([max(1, shape.text_length - k) for k in range(shape.batch)])
    mask = (torch.arange(shape.text_length)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


def plan_wan_stages(text_encoder: torch.nn.Module, transformer: torch.nn.Module, shapes: Sequence[WanShape],
                    seed: int = 0) -> list[StagePlan]:
    """Stage plans whose example inputs come from chaining the torch stages at each shape (the
    text encoder's padded output feeds the embed stage, the embed's outputs the blocks ...)."""
    config = transformer.config
    generator = torch.Generator().manual_seed(seed)
    embed, head = EmbedStage(transformer).eval(), HeadStage(transformer).eval()
    blocks = [BlockStage(transformer, i).eval() for i in range(len(transformer.blocks))]
    examples: dict[str, list[tuple[torch.Tensor, ...]]] = {}
    with torch.no_grad():
        for shape in shapes:
            ids, mask = text_encoder_example(shape, int(text_encoder.config.vocab_size), generator)
            examples.setdefault("text_encoder", []).append((ids, mask))
            prompt_embeds = text_encoder(ids, mask).last_hidden_state * mask[..., None]
            latents = torch.randn(shape.batch, int(config.in_channels), shape.frames, shape.height, shape.width,
                                  generator=generator)
            timestep = torch.rand(shape.batch, generator=generator) * 1000
            examples.setdefault("dit_embed", []).append((latents, timestep, prompt_embeds))
            hidden_states, temb, timestep_proj, context = embed(latents, timestep, prompt_embeds)
            rope_cos, rope_sin = transformer.rope(latents)
            for i, block in enumerate(blocks):
                examples.setdefault(f"dit_block_{i:02d}", []).append(
                    (hidden_states, context, timestep_proj, rope_cos, rope_sin))
                hidden_states = block(hidden_states, context, timestep_proj, rope_cos, rope_sin)
            examples.setdefault("dit_head", []).append((hidden_states, temb))
    plans = [
        StagePlan("text_encoder", "text_encoder", None, TextEncoderStage(text_encoder).eval(),
                     ["input_ids", "attention_mask"], ["prompt_embeds"],
                     {"input_ids": TEXT, "attention_mask": TEXT, "prompt_embeds": TEXT}, examples["text_encoder"]),
        StagePlan("dit_embed", "dit_embed", None, embed, ["latents", "timestep", "encoder_hidden_states"],
                     ["hidden_states", "temb", "timestep_proj", "context"],
                     {"latents": LATENTS, "timestep": BATCH, "encoder_hidden_states": TEXT, "hidden_states": TOKENS,
                      "temb": BATCH, "timestep_proj": BATCH, "context": TEXT}, examples["dit_embed"], dynamo=True),
    ]
    block_axes = {"hidden_states": TOKENS, "context": TEXT, "timestep_proj": BATCH, "rope_cos": ROPE,
                  "rope_sin": ROPE, "hidden_states_out": TOKENS}
    for i, block in enumerate(blocks):
        name = f"dit_block_{i:02d}"
        plans.append(StagePlan(name, "dit_block", i, block,
                                  ["hidden_states", "context", "timestep_proj", "rope_cos", "rope_sin"],
                                  ["hidden_states_out"], block_axes, examples[name], dynamo=True))
    plans.append(StagePlan("dit_head", "dit_head", None, head, ["hidden_states", "temb"], ["patches"],
                              {"hidden_states": TOKENS, "temb": BATCH, "patches": TOKENS}, examples["dit_head"],
                              dynamo=True))
    return plans


# --- checks --------------------------------------------------------------------------------
def streamed_dit(transformer: Any, graphs: Sequence[GraphSpec], root: Path, backend: Backend,
                 window: int = 2) -> StreamedDiT:
    """The runtime's StreamedDiT over exported `graphs` (those with roles dit_embed/dit_block/dit_head)."""
    by_role: dict[str, list[GraphSpec]] = {}
    for graph in graphs:
        by_role.setdefault(graph.role, []).append(graph)
    blocks = sorted(by_role["dit_block"], key=lambda graph: graph.index or 0)
    config = transformer.config
    return StreamedDiT(by_role["dit_embed"][0], blocks, by_role["dit_head"][0], root, backend.load, window,
                       patch_size=tuple(config.patch_size), attention_head_dim=int(config.attention_head_dim),
                       rope_max_seq_len=int(config.rope_max_seq_len))


def chained_diff(transformer: Any, graphs: Sequence[GraphSpec], root: Path, backend: Backend, shape: WanShape,
                 seed: int = 1) -> float:
    """diffusers' whole transformer vs the exported DiT graphs run by StreamedDiT (ParityError
    beyond TOLERANCE); returns the max abs diff."""
    config = transformer.config
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(shape.batch, int(config.in_channels), shape.frames, shape.height, shape.width,
                          generator=generator)
    timestep = torch.rand(shape.batch, generator=generator) * 1000
    context = torch.randn(shape.batch, shape.text_length, int(config.text_dim), generator=generator)
    with torch.no_grad():
        expected = transformer(latents, timestep, context, return_dict=False)[0].numpy()
    network = streamed_dit(transformer, graphs, root, backend)
    actual = network.run({"latents": latents.numpy(), "timestep": timestep.numpy(),
                          "encoder_hidden_states": context.numpy()})
    diff, scale = max_diff(actual, expected)
    check_parity(f"DiT graphs chained at shape {tuple(shape)}", diff, scale, TOLERANCE)
    return diff


# --- export --------------------------------------------------------------------------------
def export_wan_transformer(text_encoder: Any, transformer: Any, root: Path, shapes: Sequence[WanShape],
                           backend: Backend, seed: int = 0) -> tuple[list[GraphSpec], dict[str, float]]:
    """Export the text encoder and the DiT stages into `root` (graphs/text_encoder.onnx,
    graphs/dit_embed.onnx, graphs/dit_block_NN.onnx, graphs/dit_head.onnx) with dynamic batch,
    text length, frames, latent height/width and tokens.

    `shapes`: at least two WanShapes; the first is the export example (every dynamic size >= 2,
    since torch.export fixes sizes of 1), each graph is checked against torch at all of them, and
    the chained DiT against diffusers' `transformer(...)` at the first two. Returns the GraphSpecs
    in running order and the max abs diffs by graph name, plus CHAINED.
    """
    shapes = [WanShape(*shape) for shape in shapes]
    if len(shapes) < 2:
        raise InvalidArgumentError("export_wan_transformer checks every graph at two shapes; pass at least two")
    if min(shapes[0]) < 2:
        raise InvalidArgumentError(f"the export example shape {tuple(shapes[0])} has a size below 2, which torch.export "
                                   "would fix in the graph; make every size of the first shape at least 2")
    text_encoder, transformer = text_encoder.float().eval(), transformer.float().eval()
    graphs: list[GraphSpec] = []
    diffs: dict[str, float] = {}
    for plan in plan_wan_stages(text_encoder, transformer, shapes, seed=seed):
        graph = plan.export(root)
        diffs[plan.name] = plan.check(graph, root, backend, TOLERANCE)
        graphs.append(graph)
    dit = [graph for graph in graphs if graph.role != "text_encoder"]
    diffs[CHAINED] = max(chained_diff(transformer, dit, root, backend, shape) for shape in shapes[:2])
    return graphs, diffs


def export_whole_transformer(transformer: Any, root: Path, shapes: Sequence[WanShape], backend: Backend,
                             relative_file: str = "graphs/transformer.onnx") -> tuple[GraphSpec, float]:
    """The whole transformer as one graph (role `transformer`, the bench's one-graph baseline) with
    the same dynamic axes, checked against diffusers at every shape; returns (GraphSpec, max diff)."""
    shapes = [WanShape(*shape) for shape in shapes]
    transformer = transformer.float().eval()
    generator = torch.Generator().manual_seed(2)
    config = transformer.config
    examples = []
    for shape in shapes:
        examples.append((torch.randn(shape.batch, int(config.in_channels), shape.frames, shape.height, shape.width,
                                     generator=generator),
                         torch.rand(shape.batch, generator=generator) * 1000,
                         torch.randn(shape.batch, shape.text_length, int(config.text_dim), generator=generator)))
    plan = StagePlan(Path(relative_file).stem, "transformer", None, WholeTransformer(transformer).eval(),
                        ["latents", "timestep", "encoder_hidden_states"], ["noise_pred"],
                        {"latents": LATENTS, "timestep": BATCH, "encoder_hidden_states": TEXT, "noise_pred": LATENTS},
                        examples, dynamo=True)
    graph = plan.export(root, relative_file)
    return graph, plan.check(graph, root, backend, TOLERANCE)


__all__ = ["BlockStage", "EmbedStage", "HeadStage", "TextEncoderStage", "WanShape", "WholeTransformer",
           "export_wan_transformer", "export_whole_transformer"]
