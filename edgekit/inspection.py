"""`edgekit inspect`: what a package holds and what running it keeps in memory."""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from edgekit.manifest import GraphSpec, Manifest


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
    table = Table(title="graphs (as listed; the runtime finds them by role and index)")
    table.add_column("name", no_wrap=True)
    for column in ("role", "format", "size", "inputs", "outputs"):
        table.add_column(column)
    for graph in graphs:
        table.add_row(
            graph.name, graph.role + ("" if graph.index is None else f" {graph.index}"),
            f"{graph.format}×{len(graph.files)}",
            _mib(graph.bytes),
            ", ".join(f"{t.name}{list(t.shape)}" for t in graph.inputs),
            ", ".join(f"{t.name}{list(t.shape)}" for t in graph.outputs),
        )
    return table


def _header(manifest: Manifest) -> str:
    """What every package says about itself, whatever its task."""
    return (f"{manifest.root}: format v{manifest.format_version} · task {manifest.task} · family {manifest.family} · "
            f"{manifest.dtype} · exported by edgekit {manifest.exporter.get('edgekit', '?')} · "
            f"{len(manifest.graphs)} graphs ({', '.join(manifest.graph_formats)}), {len(manifest.files())} files, "
            f"{_mib(manifest.total_bytes)}")


def _video_lines(manifest: Manifest) -> Text:
    """A video package: the defaults a run uses, and the UNet's streamed weights."""
    assert manifest.video is not None
    c = manifest.video.conditioning
    lines = Text(
        f"scheduler {manifest.video.scheduler.get('_class_name', '?')} · defaults {c.num_frames} frames, "
        f"{c.num_inference_steps} steps, {c.height}x{c.width} (multiples of {c.size_multiple})"
    )
    if manifest.video.svd is not None:
        svd = manifest.video.svd
        lines.append(f" · svd: fps {svd.fps}, guidance {svd.min_guidance_scale}-{svd.max_guidance_scale}")
    wan = manifest.video.wan
    if wan is not None:
        lines.append(f" · wan: prompts padded to {wan.max_sequence_length} tokens, guidance {wan.guidance_scale}, "
                     f"fps {wan.fps}, patch {'x'.join(map(str, wan.patch_size))}")
    streamed = manifest.graphs_by_role("dit_block") if wan is not None else manifest.unet_graphs
    sizes = [graph.bytes for graph in streamed]
    what = f"DiT blocks ({len(sizes)})" if wan is not None else "UNet stages"
    lines.append(f"\n{what} {_mib(sum(sizes))}, the largest {_mib(max(sizes))} (streamed: window 2 maps at most "
                 "two of them)")
    if manifest.video.op_groups:
        axes = [group.axis for group in manifest.video.op_groups.values()]
        lines.append(f"\noperator groups: {len(axes)} ("
                     + ", ".join(f"{axes.count(axis)} along {axis}" for axis in sorted(set(axes)))
                     + f"); `edgekit run --slices N` splits each along its axis (sliced vs unsliced at export: "
                     f"{manifest.parity.get('sliced_vs_unsliced_max_abs_diff', 'n/a')})")
    return lines


def _quantization_line(record: dict | None) -> str:
    """int8/mixed packages: which layers are int8 and what the agreement gate measured."""
    if not record:
        return ""
    fp32_layers = [name for name in record.get("fp32_graphs", []) if str(name).startswith("layer_")]
    return (f"\nint8: {len(record.get('int8_graphs', []))} layer graphs int8"
            + (f" ({', '.join(map(str, fp32_layers))} kept fp32)" if fp32_layers else "")
            + f", top-{record.get('top_k')} agreement with fp32 {record.get('agreement', 0):.4f} on "
              f"{record.get('gate_queries')} queries of {record.get('gate_data')} (gate {record.get('min_agreement')})")


def _ranking_lines(manifest: Manifest) -> Text:
    """A ranking package: sizes, scoring, and what streaming it keeps mapped."""
    ranking = manifest.ranking
    assert ranking is not None
    depth_heads = [g.index for g in manifest.graphs_by_role("depth_head")]
    bytes_per_value = 2 if manifest.dtype == "fp16" else 4
    hidden_per_candidate = bytes_per_value * ranking.max_length * ranking.hidden_size
    table = ranking.embedding_table
    return Text(
        f"{ranking.num_layers} layers · hidden {ranking.hidden_size} · max length {ranking.max_length} · "
        f"scoring {ranking.scoring.kind} · source {manifest.source.get('path', '?')} · "
        f"parity (chained) {manifest.parity.get('chained_max_abs_diff', 'n/a')}"
        + (f"\nprompt: {ranking.padding_side} padding, instruction {ranking.prompt.instruction!r}"
           if ranking.prompt else "")
        + (f"\nper-depth heads at depths {depth_heads}" if depth_heads else "")
        + _quantization_line(manifest.quantization)
        + f"\nembedding table {table.entry.file} {list(table.shape)} {table.dtype} "
        f"{_mib(sum(entry.bytes for entry in table.files()))}: memory-mapped, "
        f"only the rows of a batch's tokens are read\n"
        f"weights mapped while streaming (only the computing graph's pages are read): window 1 "
        f"{_mib(resident_weight_bytes(manifest, 1))}, window 2 {_mib(resident_weight_bytes(manifest, 2))}, "
        f"all {_mib(resident_weight_bytes(manifest, 10**9))}\n"
        f"hidden states kept between layers: {_mib(hidden_per_candidate)} per candidate at max length "
        f"(x2 while a layer runs), plus one chunk's activations inside a layer"
    )


def describe(directory: str | Path) -> Group:
    """One description for every task: the common header, the graph table (every graph of every
    format), the task's lines. A package holding several graph formats gets the task's lines for
    each (one run uses one format's graphs, with the shared files)."""
    manifest = Manifest.load(directory)
    parts: list[Text] = []
    for graph_format in manifest.graph_formats:
        view = manifest.for_format(graph_format)
        if len(manifest.graph_formats) > 1:
            runs = "--provider coreml, on macOS" if graph_format == "mlpackage" else "any other provider"
            parts.append(Text(f"\n{graph_format} graphs ({len(view.graphs)}; `edgekit run` runs them with {runs}):"))
        parts.append(_video_lines(view) if view.task == "video" else _ranking_lines(view))
    return Group(Text(_header(manifest)), _graph_table(manifest.graphs), *parts)
