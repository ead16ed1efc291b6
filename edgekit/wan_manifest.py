"""The Wan family's part of a video manifest: `video.wan` (text conditioning, the DiT's shape
facts, the VAE's latent normalisation) and the graphs a Wan package must hold.

Graph roles of a Wan package, in execution order: `text_encoder` (UMT5: input_ids,
attention_mask -> prompt_embeds), `dit_embed` (patch + timestep/text embeddings), `dit_block`
0..n-1 (one transformer block each; rotary tables are inputs the runtime computes from
`patch_size`, `attention_head_dim`, `rope_max_seq_len` and `rope_theta`), `dit_head` (output
norm and projection; the runtime unpatchifies), `vae_decoder_first` (the first latent frame) and
`vae_decoder_next` (later latent frames, carrying the causal convs' feature cache as `cache_NN`
inputs and `cache_NN_out` outputs). docs/FORMAT.md documents the section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgekit.manifest_fields import (
    MAX_HIDDEN,
    MAX_LENGTH,
    MAX_TEXT_CHARS,
    MAX_VOCAB,
    ManifestError,
    integer,
    items,
    number,
    obj,
    required,
    shown,
    text,
)
from edgekit.package_files import FileEntry, GraphSpec

WAN_ROLES = ("text_encoder", "dit_embed", "dit_block", "dit_head", "vae_decoder_first", "vae_decoder_next")
WAN_SINGLE_ROLES = ("text_encoder", "dit_embed", "dit_head", "vae_decoder_first", "vae_decoder_next")
# what the runtime (runtimes/video/wan.py, dit.py) feeds each graph and reads back
WAN_INPUTS = {
    "text_encoder": ("input_ids", "attention_mask"),
    "dit_embed": ("latents", "timestep", "encoder_hidden_states"),
    "dit_head": ("hidden_states", "temb"),
}
EMBED_OUTPUTS = frozenset({"hidden_states", "temb", "timestep_proj", "context"})
BLOCK_INPUTS = frozenset({"hidden_states", "context", "timestep_proj", "rope_cos", "rope_sin", "temb"})
MAX_LATENT_CHANNELS = 1024


@dataclass(frozen=True)
class WanConditioning:
    """The Wan family's own facts (manifest `video.wan`).

    Text: `tokenizer` (tokenizer.json of the UMT5 tokenizer), `max_sequence_length` (prompt
    tokens: padded to it, longer prompts truncated, as diffusers' WanPipeline does), `text_dim`
    (the encoder's width), `guidance_scale` and `negative_prompt` (the run's defaults).
    Transformer: `patch_size` (t, h, w), `attention_head_dim`, `rope_max_seq_len`, `rope_theta`.
    VAE: `vae_scale_factor_temporal` (T latent frames decode to 1 + f(T-1) frames),
    `latents_mean` / `latents_std` (one per latent channel: latents are mapped to
    latents * std + mean before decoding). `fps`: the frame rate videos are written at.
    """

    tokenizer: FileEntry
    max_sequence_length: int
    text_dim: int
    patch_size: tuple[int, int, int]
    attention_head_dim: int
    rope_max_seq_len: int
    rope_theta: float
    vae_scale_factor_temporal: int
    latents_mean: tuple[float, ...]
    latents_std: tuple[float, ...]
    guidance_scale: float
    negative_prompt: str
    fps: int

    @staticmethod
    def from_dict(data: Any, where: str = "video.wan") -> WanConditioning:
        data = obj(data, where)

        def size(key: str, high: int) -> int:
            return integer(required(data, key, where), f"{where}.{key}", 1, high)

        def floats(key: str, low: float, low_open: bool) -> tuple[float, ...]:
            values = items(required(data, key, where), f"{where}.{key}", 1, MAX_LATENT_CHANNELS)
            return tuple(number(v, f"{where}.{key}[{i}]", low, 1e6, low_open) for i, v in enumerate(values))

        patch = items(required(data, "patch_size", where), f"{where}.patch_size", 3, 3)
        pt, ph, pw = (integer(v, f"{where}.patch_size[{i}]", 1, 64) for i, v in enumerate(patch))
        return WanConditioning(
            tokenizer=FileEntry.from_dict(required(data, "tokenizer", where), f"{where}.tokenizer"),
            max_sequence_length=size("max_sequence_length", MAX_LENGTH),
            text_dim=size("text_dim", MAX_HIDDEN),
            patch_size=(pt, ph, pw),
            attention_head_dim=size("attention_head_dim", MAX_HIDDEN),
            rope_max_seq_len=size("rope_max_seq_len", MAX_VOCAB),
            rope_theta=number(required(data, "rope_theta", where), f"{where}.rope_theta", 1.0, 1e9),
            vae_scale_factor_temporal=size("vae_scale_factor_temporal", 64),
            latents_mean=floats("latents_mean", -1e6, False),
            latents_std=floats("latents_std", 0.0, True),
            guidance_scale=number(required(data, "guidance_scale", where), f"{where}.guidance_scale", 0.0, 1e3),
            negative_prompt=text(required(data, "negative_prompt", where), f"{where}.negative_prompt",
                                 MAX_TEXT_CHARS, empty=True, lines=True),
            fps=integer(required(data, "fps", where), f"{where}.fps", 1, 1000),
        )

    def check(self, conditioning: Any) -> None:
        """Raise ManifestError where the facts contradict each other or the generic conditioning
        (a VideoConditioning: latent channels, VAE scale factor, size multiple, default frames)."""
        latent_channels, vae_scale_factor = conditioning.latent_channels, conditioning.vae_scale_factor
        size_multiple = conditioning.size_multiple
        if self.vae_scale_factor_temporal != 4:  # runtimes/video/wan_decode.py: 4 frames per later latent frame
            raise ManifestError(f"video.wan.vae_scale_factor_temporal {self.vae_scale_factor_temporal} is not 4, the "
                                "only temporal factor this runtime decodes")
        if (conditioning.num_frames - 1) % self.vae_scale_factor_temporal:
            raise ManifestError(f"default num_frames {conditioning.num_frames} is not of the form "
                                f"{self.vae_scale_factor_temporal}k+1")
        if len(self.latents_mean) != latent_channels or len(self.latents_std) != latent_channels:
            raise ManifestError(f"video.wan.latents_mean and latents_std need one value per latent channel "
                                f"({latent_channels}), got {len(self.latents_mean)} and {len(self.latents_std)}")
        if self.attention_head_dim % 2:
            raise ManifestError(f"video.wan.attention_head_dim must be even (rotary pairs), got "
                                f"{self.attention_head_dim}")
        _, ph, pw = self.patch_size
        if size_multiple % (vae_scale_factor * ph) or size_multiple % (vae_scale_factor * pw):
            raise ManifestError(f"size_multiple {size_multiple} is not a multiple of the VAE scale factor times the "
                                f"patch size {self.patch_size}")


def check_wan_graphs(graphs_by_role: Callable[[str], list[GraphSpec]]) -> None:
    """The graphs a Wan package must hold, with the IO the runtime feeds and reads (ManifestError)."""
    for role in WAN_SINGLE_ROLES:
        if len(graphs_by_role(role)) != 1:
            raise ManifestError(f"a wan package has exactly one {role!r} graph")
    blocks = graphs_by_role("dit_block")
    if not blocks or [graph.index for graph in blocks] != list(range(len(blocks))):
        raise ManifestError(f"a wan package has dit_block graphs with indices 0..n-1 (n >= 1), got "
                            f"{shown([graph.index for graph in blocks])}")
    for role, feeds in WAN_INPUTS.items():
        graph = graphs_by_role(role)[0]
        if tuple(spec.name for spec in graph.inputs) != feeds or not graph.outputs:
            raise ManifestError(f"graph {graph.name!r}: a wan {role} takes {list(feeds)} and has an output")
    head = graphs_by_role("dit_head")[0]
    if [spec.name for spec in head.outputs] != ["patches"]:
        raise ManifestError(f"graph {head.name!r}: the wan dit_head outputs ['patches']")
    embed = graphs_by_role("dit_embed")[0]
    if {spec.name for spec in embed.outputs} != EMBED_OUTPUTS:
        raise ManifestError(f"graph {embed.name!r}: the wan dit_embed outputs {sorted(EMBED_OUTPUTS)}")
    for graph in blocks:
        names = {spec.name for spec in graph.inputs}
        if not names <= BLOCK_INPUTS or "hidden_states" not in names or \
                [spec.name for spec in graph.outputs] != ["hidden_states_out"]:
            raise ManifestError(f"graph {graph.name!r}: a dit_block takes hidden_states and some of "
                                f"{sorted(BLOCK_INPUTS - {'hidden_states'})} and outputs hidden_states_out")
    first, following = graphs_by_role("vae_decoder_first")[0], graphs_by_role("vae_decoder_next")[0]
    caches = _cache_outputs(first)
    if [spec.name for spec in first.inputs] != ["latents"] or "frames" not in {s.name for s in first.outputs}:
        raise ManifestError(f"graph {first.name!r}: the first-chunk decoder takes latents and outputs frames")
    inputs = [spec.name for spec in following.inputs]
    if inputs[:1] != ["latents"] or set(inputs[1:]) != caches or _cache_outputs(following) != caches:
        raise ManifestError(f"graph {following.name!r}: the next-chunk decoder takes latents and the "
                            f"{len(caches)} caches the first-chunk decoder outputs, and outputs frames and each "
                            "cache again (cache_NN -> cache_NN_out)")


def _cache_outputs(graph: GraphSpec) -> set[str]:
    """The feature caches a decoder graph hands on: its outputs but frames, as the input names they replace."""
    names = [spec.name for spec in graph.outputs if spec.name != "frames"]
    if any(not name.endswith("_out") for name in names) or "frames" not in {spec.name for spec in graph.outputs}:
        raise ManifestError(f"graph {graph.name!r}: a wan decoder outputs frames and cache_NN_out tensors, got "
                            f"{shown(names, 80)}")
    return {name.removesuffix("_out") for name in names}
