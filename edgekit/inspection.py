"""`edgekit inspect`: what a package holds and what running it keeps in memory."""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from edgekit.manifest import GraphSpec, Manifest
from edgekit.video_manifest import VideoManifest, load_any


def _mib(size: float) -> str:
    return f"{size / 2**20:.2f} MiB"


def resident_weight_bytes(manifest: Manifest, window: int) -> int:
    """The most graph bytes mapped at once when streaming with `window` graphs (an upper bound:
    weights are memory-mapped, and only the computing graph's pages are read)."""
    sizes = [graph.bytes for graph in manifest.stream_graphs]
    if window >= len(sizes):
        return sum(sizes)
    return max(sum(sizes[i : i + window]) for i in range(len(sizes) - window + 1))


def _graph_table(graphs: tuple[GraphSpec, ...]) -> Table:
    table = Table(title="graphs (execution order)")
    for column in ("#", "name", "role", "size", "inputs", "outputs"):
        table.add_column(column)
    for position, graph in enumerate(graphs):
        table.add_row(
            str(position), graph.name, graph.role, _mib(graph.bytes),
            ", ".join(f"{t.name}{list(t.shape)}" for t in graph.inputs),
            ", ".join(f"{t.name}{list(t.shape)}" for t in graph.outputs),
        )
    return table


def describe_video(manifest: VideoManifest) -> Group:
    """A video package: its stages, the defaults a run uses, and the UNet's streamed weights."""
    c = manifest.conditioning
    header = Text(
        f"{manifest.root}: task video · family {manifest.family} · {manifest.dtype} · "
        f"format v{manifest.format_version}\n"
        f"scheduler {manifest.scheduler.get('_class_name', '?')} · defaults {c.num_frames} frames, "
        f"{c.num_inference_steps} steps, {c.height}x{c.width} (multiples of {c.size_multiple}), fps {c.fps}, "
        f"guidance {c.min_guidance_scale}-{c.max_guidance_scale}"
    )
    unet = [graph.bytes for graph in manifest.unet_graphs]
    memory = Text(f"total {_mib(manifest.total_bytes)} on disk; UNet stages {_mib(sum(unet))}, the largest "
                  f"{_mib(max(unet))} (streamed: window 2 maps at most two of them)")
    if manifest.op_groups:
        axes = [group.axis for group in manifest.op_groups.values()]
        memory.append(f"\noperator groups: {len(axes)} ("
                      + ", ".join(f"{axes.count(axis)} along {axis}" for axis in sorted(set(axes)))
                      + f"); `edgekit run --slices N` splits each along its axis (sliced vs unsliced at export: "
                      f"{manifest.parity.get('sliced_vs_unsliced_max_abs_diff', 'n/a')})")
    return Group(header, _graph_table(manifest.graphs), memory)


def describe(directory: str | Path) -> Group:
    loaded = load_any(directory)
    if isinstance(loaded, VideoManifest):
        return describe_video(loaded)
    manifest: Manifest = loaded
    header = Text(
        f"{manifest.root}: task {manifest.task} · family {manifest.family} · {manifest.num_layers} layers · "
        f"hidden {manifest.hidden_size} · max length {manifest.max_length} · {manifest.dtype} · "
        f"format v{manifest.format_version}\n"
        f"source {manifest.source.get('path', '?')} · scoring {manifest.scoring.kind} · "
        f"parity (chained) {manifest.parity.get('chained_max_abs_diff', 'n/a')}"
        + (f"\nprompt: {manifest.padding_side} padding, instruction {manifest.prompt.instruction!r}"
           if manifest.prompt else "")
        + (f"\nper-depth heads at depths {[g.index for g in manifest.graphs_by_role('depth_head')]}"
           if manifest.graphs_by_role("depth_head") else "")
    )
    graphs = _graph_table(manifest.graphs)
    bytes_per_value = 2 if manifest.dtype == "fp16" else 4
    hidden_per_candidate = bytes_per_value * manifest.max_length * manifest.hidden_size
    table = manifest.embedding_table
    table_line = (f"embedding table {table.entry.file} {list(table.shape)} {_mib(table.entry.bytes)}: memory-mapped, "
                  f"only the rows of a batch's tokens are read\n" if table else "")
    memory = Text(
        f"total {_mib(manifest.total_bytes)} on disk\n{table_line}"
        f"weights mapped while streaming (only the computing graph's pages are read): window 1 "
        f"{_mib(resident_weight_bytes(manifest, 1))}, window 2 {_mib(resident_weight_bytes(manifest, 2))}, "
        f"all {_mib(resident_weight_bytes(manifest, 10**9))}\n"
        f"hidden states kept between layers: {_mib(hidden_per_candidate)} per candidate at max length "
        f"(x2 while a layer runs), plus one chunk's activations inside a layer"
    )
    return Group(header, graphs, memory)
