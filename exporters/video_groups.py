"""Operator grouping for the SVD UNet: its blocks cut into groups of ops that are each independent
along one axis, so the runtime's Feature Slicer can run a group over slices of that axis exactly.

Every op of the UNet (after the time embedding) is listed in execution order with the named
tensors it reads and writes and the axis it is independent along:

| axis | ops | why slicing is exact |
|---|---|---|
| `frames` | conv_in, each resnet's spatial ResNet (GroupNorm per frame), the spatial transformer's input (GroupNorm per frame + proj_in), spatial transformer blocks, its output (proj_out + residual), skip concatenation, down/up samplers, the output head | `EXACT["frames"]` |
| `pixels` | each temporal transformer block with its frame position embedding and time mixer | `EXACT["pixels"]` |
| `videos` | each resnet's temporal ResNet with its time mixer | `EXACT["videos"]` |

Consecutive ops of one block with the same axis form one group (one graph). Tensors crossing
group borders: `hidden_states` [N,C,h,w], `tokens` [N,h*w,C] (inside a spatio-temporal
transformer), `skip_NN`, `temb` [N,T], `encoder_hidden_states` [N,1,D], `image_only_indicator`
[B,F], and `noise_pred` at the end. Each op runs diffusers' own submodules, with the reshapes of
the diffusers forward it replaces (SpatioTemporalResBlock, TransformerSpatioTemporalModel,
the *SpatioTemporal blocks), so grouping changes no arithmetic.

Example::

    groups = plan_groups(unet)
    [(g.name, g.axis, g.inputs, g.outputs) for g in groups]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgekit.exporters.video_stages import has_cross_attention

Tensors = dict[str, torch.Tensor]

EXACT = {
    "frames": "per-frame ops only: GroupNorm statistics over one frame's channels and pixels, convolutions and "
              "spatial attention within a frame, cross-attention to that frame's image embedding",
    "pixels": "per-pixel ops only: LayerNorm and feed-forward per token, temporal attention across the frames "
              "of one pixel, cross-attention to its video's image embedding",
    "videos": "the temporal ResNet's GroupNorm takes statistics over every frame and pixel of one video and its "
              "convolution mixes neighbouring frames, so only whole videos (the guidance batch) split exactly",
}


@dataclass
class Op:
    """One step of the UNet: `run(values)` returns the tensors it writes (names in `writes`).
    `axis` None: an alias (a skip copy) that joins the group before it."""

    name: str
    block: str
    axis: str | None
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    modules: tuple[nn.Module, ...]
    run: Callable[[Tensors], Tensors]


@dataclass
class GroupPlan:
    """One group graph: its ops, axis, ONNX input names and (name in the dataflow, ONNX name) outputs."""

    name: str
    block: str
    axis: str
    ops: list[Op]
    inputs: list[str] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def output_names(self) -> list[str]:
        return [onnx_name for _, onnx_name in self.outputs]

    def sliced_dims(self) -> tuple[dict[str, int], dict[str, int]]:
        """{tensor: dim} of the inputs and outputs split along `axis` (the others go whole to each slice)."""
        def dim(name: str) -> int | None:
            if self.axis == "pixels":
                return 1 if name.startswith("tokens") else None
            if self.axis == "frames" and name == "image_only_indicator":
                raise ValueError(f"{self.name}: a frames group cannot read image_only_indicator")
            return 0

        ins = {name: d for name in self.inputs if (d := dim(name)) is not None}
        outs = {name: d for name in self.output_names if (d := dim(name)) is not None}
        return ins, outs


class GroupModule(nn.Module):
    """A group as one module: positional inputs in `plan.inputs` order, outputs in `plan.outputs` order."""

    def __init__(self, plan: GroupPlan) -> None:
        super().__init__()
        self.plan = plan
        self.parts = nn.ModuleList(module for op in plan.ops for module in op.modules)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...] | torch.Tensor:
        values = dict(zip(self.plan.inputs, inputs))
        for op in self.plan.ops:
            values.update(op.run(values))
        outputs = tuple(values[name] for name, _ in self.plan.outputs)
        return outputs[0] if len(outputs) == 1 else outputs


# --- the ops of each diffusers module ---------------------------------------------------------
def _resnet_ops(prefix: str, block: str, resnet: nn.Module) -> list[Op]:
    def spatial(v: Tensors) -> Tensors:
        return {"hidden_states": resnet.spatial_res_block(v["hidden_states"], v["temb"])}

    def temporal(v: Tensors) -> Tensors:  # SpatioTemporalResBlock.forward after its spatial ResNet
        h, frames = v["hidden_states"], v["image_only_indicator"].shape[-1]
        batch_frames, channels, height, width = h.shape
        h5 = h.reshape(batch_frames // frames, frames, channels, height, width).permute(0, 2, 1, 3, 4)
        temb = v["temb"].reshape(batch_frames // frames, frames, -1)
        mixed = resnet.time_mixer(x_spatial=h5, x_temporal=resnet.temporal_res_block(h5, temb),
                                  image_only_indicator=v["image_only_indicator"])
        return {"hidden_states": mixed.permute(0, 2, 1, 3, 4).reshape(batch_frames, channels, height, width)}

    return [
        Op(f"{prefix}.spatial_res_block", block, "frames", ("hidden_states", "temb"), ("hidden_states",),
           (resnet.spatial_res_block,), spatial),
        Op(f"{prefix}.temporal_res_block", block, "videos", ("hidden_states", "temb", "image_only_indicator"),
           ("hidden_states",), (resnet.temporal_res_block, resnet.time_mixer), temporal),
    ]


def _transformer_ops(prefix: str, block: str, attn: nn.Module) -> list[Op]:
    """TransformerSpatioTemporalModel.forward, cut at each change of axis; `hidden_states` stays the
    residual while the transformer works on `tokens`."""

    def enter(v: Tensors) -> Tensors:
        h = v["hidden_states"]
        batch_frames, _, height, width = h.shape
        x = attn.norm(h)
        x = x.permute(0, 2, 3, 1).reshape(batch_frames, height * width, x.shape[1])
        return {"tokens": attn.proj_in(x)}

    def spatial(layer: nn.Module) -> Callable[[Tensors], Tensors]:
        return lambda v: {"tokens": layer(v["tokens"], encoder_hidden_states=v["encoder_hidden_states"])}

    def temporal(layer: nn.Module) -> Callable[[Tensors], Tensors]:
        def run(v: Tensors) -> Tensors:
            tokens, indicator, context = v["tokens"], v["image_only_indicator"], v["encoder_hidden_states"]
            frames = indicator.shape[-1]
            batch_frames, pixels, _ = tokens.shape
            batch = batch_frames // frames
            frame_ids = torch.arange(frames, device=tokens.device).repeat(batch, 1).reshape(-1)
            emb = attn.time_pos_embed(attn.time_proj(frame_ids).to(dtype=tokens.dtype))[:, None, :]
            first = context.reshape(batch, frames, -1, context.shape[-1])[:, 0]
            time_context = first[:, None].broadcast_to(batch, pixels, first.shape[-2], first.shape[-1])
            time_context = time_context.reshape(batch * pixels, -1, first.shape[-1])
            mixed = layer(tokens + emb, num_frames=frames, encoder_hidden_states=time_context)
            return {"tokens": attn.time_mixer(x_spatial=tokens, x_temporal=mixed, image_only_indicator=indicator)}

        return run

    def leave(v: Tensors) -> Tensors:
        residual = v["hidden_states"]
        batch_frames, _, height, width = residual.shape
        x = attn.proj_out(v["tokens"])
        x = x.reshape(batch_frames, height, width, x.shape[-1]).permute(0, 3, 1, 2).contiguous()
        return {"hidden_states": x + residual}

    ops = [Op(f"{prefix}.proj_in", block, "frames", ("hidden_states",), ("tokens",), (attn.norm, attn.proj_in), enter)]
    for k, (layer, temporal_layer) in enumerate(zip(attn.transformer_blocks, attn.temporal_transformer_blocks)):
        ops.append(Op(f"{prefix}.transformer_blocks.{k}", block, "frames", ("tokens", "encoder_hidden_states"),
                      ("tokens",), (layer,), spatial(layer)))
        ops.append(Op(f"{prefix}.temporal_transformer_blocks.{k}", block, "pixels",
                      ("tokens", "encoder_hidden_states", "image_only_indicator"), ("tokens",),
                      (temporal_layer, attn.time_pos_embed, attn.time_mixer), temporal(temporal_layer)))
    ops.append(Op(f"{prefix}.proj_out", block, "frames", ("tokens", "hidden_states"), ("hidden_states",),
                  (attn.proj_out,), leave))
    return ops


def _module_op(name: str, block: str, module: nn.Module, writes: str = "hidden_states") -> Op:
    return Op(name, block, "frames", ("hidden_states",), (writes,), (module,),
              lambda v: {writes: module(v["hidden_states"])})


def _skip_op(block: str, skip: str) -> Op:
    return Op(f"emit {skip}", block, None, ("hidden_states",), (skip,), (), lambda v: {skip: v["hidden_states"]})


def _concat_op(block: str, skip: str) -> Op:
    return Op(f"concat {skip}", block, "frames", ("hidden_states", skip), ("hidden_states",), (),
              lambda v: {"hidden_states": torch.cat([v["hidden_states"], v[skip]], dim=1)})


def unet_ops(unet: Any) -> list[Op]:
    """Every op of UNetSpatioTemporalConditionModel.forward after the time embedding, in order.
    Skips are named skip_NN in the order diffusers appends them to down_block_res_samples."""
    ops: list[Op] = []
    skips: list[str] = []

    def emit(block: str) -> None:
        skips.append(f"skip_{len(skips):02d}")
        ops.append(_skip_op(block, skips[-1]))

    for i, down in enumerate(unet.down_blocks):
        block = f"down_block_{i}"
        if i == 0:
            ops.append(_module_op("conv_in", block, unet.conv_in))
            emit(block)
        attentions = down.attentions if has_cross_attention(down) else [None] * len(down.resnets)
        for k, (resnet, attn) in enumerate(zip(down.resnets, attentions)):
            ops += _resnet_ops(f"down_blocks.{i}.resnets.{k}", block, resnet)
            if attn is not None:
                ops += _transformer_ops(f"down_blocks.{i}.attentions.{k}", block, attn)
            emit(block)
        if down.downsamplers is not None:
            ops.append(_module_op(f"down_blocks.{i}.downsamplers.0", block, down.downsamplers[0]))
            emit(block)
    mid = unet.mid_block
    ops += _resnet_ops("mid_block.resnets.0", "mid_block", mid.resnets[0])
    for k, (attn, resnet) in enumerate(zip(mid.attentions, mid.resnets[1:])):
        ops += _transformer_ops(f"mid_block.attentions.{k}", "mid_block", attn)
        ops += _resnet_ops(f"mid_block.resnets.{k + 1}", "mid_block", resnet)
    for j, up in enumerate(unet.up_blocks):
        block = f"up_block_{j}"
        attentions = up.attentions if has_cross_attention(up) else [None] * len(up.resnets)
        for k, (resnet, attn) in enumerate(zip(up.resnets, attentions)):
            ops.append(_concat_op(block, skips.pop()))
            ops += _resnet_ops(f"up_blocks.{j}.resnets.{k}", block, resnet)
            if attn is not None:
                ops += _transformer_ops(f"up_blocks.{j}.attentions.{k}", block, attn)
        if up.upsamplers is not None:
            upsampler = up.upsamplers[0]
            ops.append(Op(f"up_blocks.{j}.upsamplers.0", block, "frames", ("hidden_states",), ("hidden_states",),
                          (upsampler,), lambda v, u=upsampler: {"hidden_states": u(v["hidden_states"], None)}))
    head = nn.Sequential(unet.conv_norm_out, unet.conv_act, unet.conv_out)
    ops.append(_module_op("conv_norm_out, conv_act, conv_out", f"up_block_{len(unet.up_blocks) - 1}", head,
                           writes="noise_pred"))
    return ops


def plan_groups(unet: Any) -> list[GroupPlan]:
    """Group consecutive ops of one block that share an axis; fill each group's inputs (read
    before written in the group) and outputs (written and read by a later group, or noise_pred).
    An output that replaces one of the group's inputs is named `X_out` in ONNX (the runtime's
    dataflow convention)."""
    groups: list[GroupPlan] = []
    for op in unet_ops(unet):
        last = groups[-1] if groups else None
        if last is not None and last.block == op.block and op.axis in (None, last.axis):
            last.ops.append(op)
            continue
        if op.axis is None:
            raise ValueError(f"{op.name} cannot open a group")
        count = sum(1 for g in groups if g.block == op.block)
        groups.append(GroupPlan(f"{op.block}.group_{count:02d}", op.block, op.axis, [op]))
    for group in groups:
        written: set[str] = set()
        for op in group.ops:
            group.inputs += [name for name in op.reads if name not in written and name not in group.inputs]
            written.update(op.writes)
    for position, group in enumerate(groups):
        written = {name for op in group.ops for name in op.writes}
        for name in sorted(written, key=lambda n: (n != "hidden_states", n)):
            if name == "noise_pred" or _read_before_rewritten(name, groups[position + 1:]):
                group.outputs.append((name, f"{name}_out" if name in group.inputs else name))
    return groups


def _read_before_rewritten(name: str, later: list[GroupPlan]) -> bool:
    for group in later:
        if name in group.inputs:
            return True
        if any(name in op.writes for op in group.ops):
            return False
    return False
