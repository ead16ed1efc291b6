"""Wan's causal VAE decoder as two stateful ONNX graphs: the first latent frame, then chunks.

diffusers' `AutoencoderKLWan._decode` runs the decoder once per latent frame. Every causal
conv with a temporal kernel of 3 keeps the last CACHE_T = 2 frames of its input from the
previous call (`feat_cache`) and puts them in front of the next call's input instead of zero
padding; the first call is special (`first_chunk`: the temporal upsamplers skip their time
conv and do not double the frames), so T latent frames decode to 1 + 4(T - 1) frames. Because
the caches carry everything one call needs from the past, any chunking of the frames after
the first is exact (FIELD-NOTES.md), so the next-chunk graph takes T >= 1 latent frames.

Graph contracts (B batch, z latent channels, h x w latent size, H x W = the VAE's spatial scale
(8 for Wan 2.1, 16 with Wan 2.2's patchified decoder) times h x w):

| graph | inputs | outputs |
|---|---|---|
| FirstChunkDecoder | latents [B, z, 1, h, w] | frames [B, 3, 1, H, W], cache_NN_out… |
| NextChunkDecoder | latents [B, z, T, h, w], cache_NN… | frames [B, 3, 4T, H, W], cache_NN_out… |

`latents` are de-normalised (the pipeline's `latents / latents_std + latents_mean` is the
runtime's job); the post-quant conv runs inside both graphs; `frames` are NOT clamped (the
runtime clamps to [-1, 1], as `_decode` does last). An output `X_out` replaces the running
tensor `X`: that naming is the whole contract the runtime (runtimes/video/wan_decode.py)
relies on. Caches are numbered in the order diffusers' `feat_idx` visits the convs that use one
(conv_in, each residual block's conv1 and conv2, the temporal upsamplers' time conv, conv_out).

Every cache is a fixed-shape float32 tensor [B, c, 2, hh, ww], so the graphs' IO is static in
time. diffusers stores other things in three places; each has an exactly equal 2-frame tensor
(checked numerically by tests/test_wan_vae.py: the chained wrappers equal `vae.decode`):
- before the first call a slot is None and the conv zero-pads 2 frames in front: a cache of two
  zero frames is the same padding (torch.cat with zeros, then no temporal padding);
- after the first call a slot holds 1 frame x0 and the next call's conv pads 1 zero frame in
  front of it: the cache [0, x0] is the same input; diffusers' next cache is then
  cat(x0, x_new)[-2:], which is the last 2 frames of cat([0, x0], x_new) as well;
- the temporal upsampler's "Rep" marker means "run the time conv without a cache" (zero
  padding) and then store cat(zeros, x) when x has 1 frame: a cache of zeros in both cases.
So every slot follows one rule: `out = conv(cat(cache, x))`, `cache_out = cat(cache, x)[-2:]`.
Wan 2.2's residual up blocks (their DupUp3D shortcut is frame-local, `first_chunk` drops its
first frame) and patchified output (unpatchify is frame-local) run inside the graphs too.

`WholeDecoder` is diffusers' `vae.decode(latents).sample` (frame loop unrolled, clamped) as
one graph at a fixed T: the one-graph baseline the bench compares the streamed decode with.

Example::

    vae = AutoencoderKLWan.from_pretrained(src / "vae")
    graphs, diffs = export_wan_decoder(vae, staging, [(8, 8), (6, 10)], backend_for("onnx", "cpu"))
    diffs["loop_chunk_2_max_abs_diff"]   # streamed ORT decode vs vae.decode on 3 latent frames
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.errors import ParityError, SourceModelError
from edgekit.exporters.onnx_writer import export_graph
from edgekit.exporters.package_parts import graph_vs_module
from edgekit.manifest import GraphSpec
from edgekit.runtimes.backends import Backend, backend_for
from edgekit.runtimes.video.wan_decode import LATENTS, decode_latents

CACHE_T = 2
TOLERANCE = 1e-4  # per graph, relative to max(1, max |reference|), as exporters/video_svd.py
LOOP_TOLERANCE = 1e-5  # the streamed, clamped decode vs diffusers' vae.decode (absolute: frames are in [-1, 1])
LOOP_FRAMES = 3  # latent frames of the loop check: first call + 2 more, so chunk 2 is one full chunk
FIRST_FILE = "graphs/vae_decoder_first.onnx"
NEXT_FILE = "graphs/vae_decoder_next.onnx"
WHOLE_FILE = "graphs/vae_decoder_whole.onnx"


class _Caches:
    """The causal convs' caches for one call, consumed in diffusers' feat_idx order.
    inputs None: the first call (every cache starts as zeros)."""

    def __init__(self, inputs: tuple[torch.Tensor, ...] | None) -> None:
        self.inputs = inputs
        self.outputs: list[torch.Tensor] = []

    def _next(self, x: torch.Tensor) -> torch.Tensor:
        if self.inputs is None:
            b, c, _, h, w = x.shape
            return x.new_zeros(b, c, CACHE_T, h, w)
        return self.inputs[len(self.outputs)]

    def conv(self, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """conv(cat(cache, x)) and record cat(cache, x)[-2:] (only the last 2 frames are concatenated)."""
        cache = self._next(x)
        self.outputs.append(torch.cat([cache, x[:, :, -CACHE_T:]], dim=2)[:, :, -CACHE_T:])
        return conv(x, cache)  # WanCausalConv3d: a 2-frame cache replaces its whole temporal padding

    def skip(self, x: torch.Tensor) -> None:
        """The first call's "Rep" slot: no time conv ran; the next call starts from zeros."""
        self.outputs.append(self._next(x))


def _residual(block: nn.Module, x: torch.Tensor, caches: _Caches) -> torch.Tensor:
    h = block.conv_shortcut(x)
    x = caches.conv(block.conv1, block.nonlinearity(block.norm1(x)))
    x = block.dropout(block.nonlinearity(block.norm2(x)))
    return caches.conv(block.conv2, x) + h


def _resample(resample: nn.Module, x: torch.Tensor, caches: _Caches, first: bool) -> torch.Tensor:
    b, c, t, h, w = x.shape
    if resample.mode == "upsample3d":
        if first:
            caches.skip(x)
        else:
            x = caches.conv(resample.time_conv, x)  # [b, 2c, t, h, w] -> frames interleaved: [b, c, 2t, h, w]
            x = x.reshape(b, 2, c, t, h, w)
            x = torch.stack((x[:, 0], x[:, 1]), 3).reshape(b, c, t * 2, h, w)
    elif resample.mode != "upsample2d":
        raise SourceModelError(f"Wan VAE decoder resample mode {resample.mode!r} is not supported")
    t = x.shape[2]
    x = resample.resample(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
    return x.view(b, t, x.size(1), x.size(2), x.size(3)).permute(0, 2, 1, 3, 4)


def _up_block(block: nn.Module, x: torch.Tensor, caches: _Caches, first: bool) -> torch.Tensor:
    shortcut = getattr(block, "avg_shortcut", None)  # WanResidualUpBlock (Wan 2.2) only
    x_copy = x
    for resnet in block.resnets:
        x = _residual(resnet, x, caches)
    upsamplers = getattr(block, "upsamplers", None)  # WanUpBlock: a list; WanResidualUpBlock: `upsampler`
    upsampler = upsamplers[0] if upsamplers else getattr(block, "upsampler", None)
    if upsampler is not None:
        x = _resample(upsampler, x, caches, first)
    if shortcut is not None:
        x = x + shortcut(x_copy, first_chunk=first)
    return x


def decode_call(vae: nn.Module, latents: torch.Tensor, caches: _Caches, first: bool) -> torch.Tensor:
    """One `_decode` call of diffusers' frame loop (post-quant conv included, unclamped)."""
    decoder = vae.decoder
    x = caches.conv(decoder.conv_in, vae.post_quant_conv(latents))
    mid = decoder.mid_block
    x = _residual(mid.resnets[0], x, caches)
    for attention, resnet in zip(mid.attentions, mid.resnets[1:]):
        x = _residual(resnet, attention(x), caches)
    for block in decoder.up_blocks:
        x = _up_block(block, x, caches, first)
    x = caches.conv(decoder.conv_out, decoder.nonlinearity(decoder.norm_out(x)))
    patch = vae.config.patch_size
    if patch is not None and patch != 1:  # unpatchify is frame-local
        b, cp, t, h, w = x.shape
        c = cp // (patch * patch)
        x = x.view(b, c, patch, patch, t, h, w).permute(0, 1, 4, 5, 3, 6, 2).reshape(b, c, t, h * patch, w * patch)
    return x


class FirstChunkDecoder(nn.Module):
    """latents [B, z, 1, h, w] -> (frames [B, 3, 1, H, W] unclamped, *cache_NN_out)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, ...]:
        caches = _Caches(None)
        frames = decode_call(self.vae, latents, caches, first=True)
        if len(caches.outputs) != cache_count(self.vae):
            raise SourceModelError(f"this Wan VAE decoder used {len(caches.outputs)} caches, edgekit counted "
                                   f"{cache_count(self.vae)}; its layout is not supported")
        return (frames, *caches.outputs)


class NextChunkDecoder(nn.Module):
    """(latents [B, z, T, h, w], *cache_NN) -> (frames [B, 3, 4T, H, W] unclamped, *cache_NN_out).

    `forward` carries one named parameter per cache (latents, cache_00, …): torch.export binds
    example inputs to parameter names, and a `*caches` parameter would be one input to it."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.names = numbered_caches(cache_count(vae))
        params = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in [LATENTS, *self.names]]

        def forward(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self.decode(inputs[0], *inputs[1:])

        forward.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        self.forward = forward  # type: ignore[method-assign]

    def decode(self, latents: torch.Tensor, *caches_in: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(caches_in) != len(self.names):
            raise ValueError(f"the next-chunk decoder takes {len(self.names)} caches, got {len(caches_in)}")
        caches = _Caches(caches_in)
        frames = decode_call(self.vae, latents, caches, first=False)
        return (frames, *caches.outputs)


class WholeDecoder(nn.Module):
    """diffusers' `vae.decode(latents).sample` (clamped), the one-graph baseline."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample


def cache_count(vae: nn.Module) -> int:
    """Caches one decoder call uses: conv_in, conv_out, 2 per residual block, 1 per temporal upsampler."""
    modules = list(vae.decoder.modules())
    residual = sum(1 for m in modules if type(m).__name__ == "WanResidualBlock")
    temporal = sum(1 for m in modules if getattr(m, "mode", None) == "upsample3d")
    return 2 + 2 * residual + temporal


def numbered_caches(count: int) -> list[str]:
    """cache_00 … in feat_idx order (wider numbers past 100 slots)."""
    width = max(2, len(str(count - 1)))
    return [f"cache_{i:0{width}d}" for i in range(count)]


def _spatial_axes(name: str, batch: str = "batch") -> dict[int, str]:
    return {0: batch, 3: f"{name}_height", 4: f"{name}_width"}


def _examples(vae: nn.Module, batch: int, hw: tuple[int, int], frames: int,
              seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Latents [batch, z, 1 + frames, h, w] and the caches the first call leaves (realistic activations)."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, int(vae.config.z_dim), 1 + frames, *hw, generator=generator)
    with torch.no_grad():
        caches = list(FirstChunkDecoder(vae)(latents[:, :, :1])[1:])
    return latents, caches


def _check_graph(module: nn.Module, spec: GraphSpec, root: Path, backend: Backend,
                 examples: list[tuple[torch.Tensor, ...]]) -> float:
    """Max abs diff of ORT vs the torch wrapper over `examples` (ParityError past TOLERANCE)."""
    return graph_vs_module(module, spec, root, backend, examples, [tensor.name for tensor in spec.inputs], TOLERANCE)


def export_wan_decoder(vae: Any, root: Path, latent_hw: list[tuple[int, int]], backend: Backend,
                       dynamo: bool = True) -> tuple[list[GraphSpec], dict[str, float]]:
    """Export the first- and next-chunk decoder graphs under `root/graphs/` and check them.

    latent_hw: latent sizes (h, w); the first is the export example (batch 2, T = 2 for the next
    graph: size-1 dimensions would be specialised), every one is checked graph by graph against
    the torch wrappers (batch 2, then 1), and the first one runs the runtime's whole decode loop
    (runtimes/video/wan_decode.decode_latents) on LOOP_FRAMES latent frames with chunks of 1 and 2
    against diffusers' `vae.decode`. Returns ([first, next] GraphSpecs, diffs) with diffs keys
    "vae_decoder_first_max_abs_diff", "vae_decoder_next_max_abs_diff" (worst over the sizes,
    every output) and "loop_chunk_1_max_abs_diff", "loop_chunk_2_max_abs_diff" (clamped frames).
    Raises ParityError past TOLERANCE (per graph) or LOOP_TOLERANCE (loop)."""
    if not latent_hw:
        raise ValueError("latent_hw needs at least one (h, w)")
    vae = vae.float().eval()
    first_module, next_module = FirstChunkDecoder(vae).eval(), NextChunkDecoder(vae).eval()
    latents, caches = _examples(vae, 2, latent_hw[0], 2, seed=0)
    names = next_module.names
    outs = [f"{name}_out" for name in names]
    first_axes = {LATENTS: _spatial_axes("latent"), "frames": _spatial_axes("frame"),
                  **{out: _spatial_axes(name) for name, out in zip(names, outs)}}
    first = export_graph(first_module, (latents[:, :, :1],), root, FIRST_FILE, [LATENTS], ["frames", *outs],
                         first_axes, "vae_decoder_first", "vae_decoder_first", dynamo=dynamo)
    next_axes = {**first_axes, **{name: _spatial_axes(name) for name in names}}
    next_axes[LATENTS] = {**next_axes[LATENTS], 2: "latent_frames"}
    next_axes["frames"] = {**next_axes["frames"], 2: "frames"}
    nxt = export_graph(next_module, (latents[:, :, 1:], *caches), root, NEXT_FILE, [LATENTS, *names],
                       ["frames", *outs], next_axes, "vae_decoder_next", "vae_decoder_next", dynamo=dynamo)
    first_examples, next_examples = [], []
    for k, hw in enumerate(latent_hw):
        example, example_caches = _examples(vae, 2 if k == 0 else 1, hw, 2 if k == 0 else 1, seed=k)
        first_examples.append((example[:, :, :1],))
        next_examples.append((example[:, :, 1:], *example_caches))
    diffs = {"vae_decoder_first_max_abs_diff": _check_graph(first_module, first, root, backend, first_examples),
             "vae_decoder_next_max_abs_diff": _check_graph(next_module, nxt, root, backend, next_examples)}
    generator = torch.Generator().manual_seed(7)
    loop_latents = torch.randn(1, int(vae.config.z_dim), LOOP_FRAMES, *latent_hw[0], generator=generator)
    with torch.no_grad():
        expected = vae.decode(loop_latents).sample.numpy()
    for chunk in (1, 2):
        first_session = backend.load(root / first.path)
        next_session = backend.load(root / nxt.path)
        try:
            got = decode_latents(first_session, next_session, loop_latents.numpy(), chunk=chunk)
        finally:
            first_session.release()
            next_session.release()
        diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
        if not diff <= LOOP_TOLERANCE:
            raise ParityError(f"the streamed Wan VAE decode (chunks of {chunk}) differs from diffusers' vae.decode by "
                              f"{diff:.3g} (allowed {LOOP_TOLERANCE}); please report it")
        diffs[f"loop_chunk_{chunk}_max_abs_diff"] = diff
    return [first, nxt], diffs


def export_whole_decoder(vae: Any, root: Path, latents_shape: tuple[int, int, int, int, int],
                         backend: Backend | None = None) -> GraphSpec:
    """diffusers' whole `vae.decode` as one graph `graphs/vae_decoder_whole.onnx` (role
    "vae_decoder_whole"), the bench's one-graph baseline. latents_shape [B, z, T, h, w]: T is
    fixed (diffusers' frame loop is unrolled at export), batch, h and w are dynamic where the
    example's are not 1. Checked against torch on the example (ParityError past TOLERANCE)."""
    vae = vae.float().eval()
    module = WholeDecoder(vae).eval()
    latents = torch.randn(*latents_shape, generator=torch.Generator().manual_seed(0))
    axes = {LATENTS: {0: "batch", 3: "latent_height", 4: "latent_width"},
            "frames": {0: "batch", 3: "frame_height", 4: "frame_width"}}
    spec = export_graph(module, (latents,), root, WHOLE_FILE, [LATENTS], ["frames"], axes, "vae_decoder_whole",
                        "vae_decoder_whole", dynamo=True)
    _check_graph(module, spec, root, backend or backend_for("onnx", "cpu"), [(latents,)])
    return spec
