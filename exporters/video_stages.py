"""Torch-side stage wrappers that cut a diffusers Stable Video Diffusion pipeline into graphs.

Each wrapper is an `nn.Module` whose `forward` is exactly the slice of diffusers' code it
replaces (UNetSpatioTemporalConditionModel.forward, AutoencoderKLTemporalDecoder.decode …),
with the tensors that cross a stage boundary made explicit. Contracts (names are the ONNX IO
names; N = batch x frames, flattened batch-major as diffusers does):

| stage | inputs | outputs |
|---|---|---|
| ImageEncoderStage | pixel_values [B,3,S,S] (CLIP-normalised) | image_embeds [B,D] |
| VaeEncoderStage | image [B,3,H,W] in [-1,1] (noise-augmented) | image_latents [B,C,h,w] (posterior mode) |
| TimeEmbeddingStage | timestep [B] float, added_time_ids [B,3] | time_embedding [B,T] |
| DownBlockStage i | hidden_states [N,.,h,w], temb [N,T], encoder_hidden_states [N,1,D] (cross-attention blocks), image_only_indicator [B,F] | hidden_states_out, skip_NN… |
| MidBlockStage | hidden_states, temb, encoder_hidden_states, image_only_indicator | hidden_states_out |
| UpBlockStage j | hidden_states, skip_NN… (ascending), temb, [encoder_hidden_states], image_only_indicator | hidden_states_out; the last: noise_pred [N,C,h,w] |
| VaeDecoderStage | latents [F,C,h,w] (already divided by scaling_factor) | frames [F,3,H,W] in ~[-1,1] |

Down block 0 also runs `conv_in` (its input is the 2C-channel latent + image-latent concat) and
emits conv_in's output as skip_00; the last up block also runs conv_norm_out, the activation and
conv_out. Skips are numbered in the order diffusers appends them to `down_block_res_samples`.
The VAE decoder takes its frame count from the latents' first dimension (one video per call).
"""

from __future__ import annotations

import torch
from torch import nn


class ImageEncoderStage(nn.Module):
    """CLIPVisionModelWithProjection: normalised pixels -> image_embeds."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixel_values).image_embeds


class VaeEncoderStage(nn.Module):
    """AutoencoderKLTemporalDecoder.encode(image).latent_dist.mode() (the pipeline's image latents)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image).latent_dist.mode()


class TimeEmbeddingStage(nn.Module):
    """The UNet's time + added-time-ids embedding (before it is repeated over frames)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, timestep: torch.Tensor, added_time_ids: torch.Tensor) -> torch.Tensor:
        unet = self.unet
        emb = unet.time_embedding(unet.time_proj(timestep).to(dtype=added_time_ids.dtype))
        time_embeds = unet.add_time_proj(added_time_ids.flatten()).reshape((added_time_ids.shape[0], -1))
        return emb + unet.add_embedding(time_embeds.to(emb.dtype))


def has_cross_attention(block: nn.Module) -> bool:
    return bool(getattr(block, "has_cross_attention", False))


class DownBlockStage(nn.Module):
    """One down block (down block 0 with conv_in first). Returns (hidden_states_out, *skips)."""

    def __init__(self, unet: nn.Module, index: int) -> None:
        super().__init__()
        self.block = unet.down_blocks[index]
        self.conv_in = unet.conv_in if index == 0 else None
        self.cross = has_cross_attention(self.block)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden_states, temb = inputs[0], inputs[1]
        skips: tuple[torch.Tensor, ...] = ()
        if self.conv_in is not None:
            hidden_states = self.conv_in(hidden_states)
            skips = (hidden_states,)
        if self.cross:
            hidden_states, res = self.block(hidden_states=hidden_states, temb=temb, encoder_hidden_states=inputs[2],
                                            image_only_indicator=inputs[3])
        else:
            hidden_states, res = self.block(hidden_states=hidden_states, temb=temb, image_only_indicator=inputs[2])
        return (hidden_states, *skips, *res)


class MidBlockStage(nn.Module):
    """UNetMidBlockSpatioTemporal."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.block = unet.mid_block

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor, encoder_hidden_states: torch.Tensor,
                image_only_indicator: torch.Tensor) -> torch.Tensor:
        return self.block(hidden_states=hidden_states, temb=temb, encoder_hidden_states=encoder_hidden_states,
                          image_only_indicator=image_only_indicator)


class UpBlockStage(nn.Module):
    """One up block taking its skips explicitly (the last one with the UNet's output head)."""

    def __init__(self, unet: nn.Module, index: int, num_skips: int) -> None:
        super().__init__()
        self.block = unet.up_blocks[index]
        self.num_skips = num_skips
        self.cross = has_cross_attention(self.block)
        last = index == len(unet.up_blocks) - 1
        self.head = nn.ModuleList([unet.conv_norm_out, unet.conv_act, unet.conv_out]) if last else None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        hidden_states = inputs[0]
        skips = tuple(inputs[1: 1 + self.num_skips])
        rest = inputs[1 + self.num_skips:]
        if self.cross:
            hidden_states = self.block(hidden_states=hidden_states, temb=rest[0], res_hidden_states_tuple=skips,
                                       encoder_hidden_states=rest[1], upsample_size=None,
                                       image_only_indicator=rest[2])
        else:
            hidden_states = self.block(hidden_states=hidden_states, temb=rest[0], res_hidden_states_tuple=skips,
                                       upsample_size=None, image_only_indicator=rest[1])
        if self.head is not None:
            for module in self.head:
                hidden_states = module(hidden_states)
        return hidden_states


class VaeDecoderStage(nn.Module):
    """AutoencoderKLTemporalDecoder.decode(z, num_frames=z.shape[0]): one video's frames per call."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        num_frames = latents.shape[0]
        indicator = torch.zeros(1, num_frames, dtype=latents.dtype, device=latents.device)
        return self.vae.decoder(latents, num_frames=num_frames, image_only_indicator=indicator)
