"""A package is untrusted input: each field an attacker can write into manifest.json is refused
in one line with exit code 2, never a traceback (issue 13, item 6).

Each story copies a tiny exported package, writes one attack into its manifest (through
tests/manifest_edit.py `write_manifest`), runs `python -m edgekit.cli run` in a fresh process,
and asserts the exact refusal. The last stories check the same refusals through the API and the
loaded session's IO names against its manifest entry.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import edgekit
from edgekit.errors import IntegrityError, NotAPackageError
from edgekit.manifest import Manifest
from tests.conftest import CANDIDATES, QUERY
from tests.manifest_edit import resign, write_manifest

Edit = Callable[[dict[str, Any]], None]


def _graph(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(graph for graph in data["graphs"] if graph["name"] == name)


def _attacked(package: Path, tmp_path: Path, edit: Edit) -> Path:
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    data = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    edit(data)
    write_manifest(copy, data)
    return copy


def _cli_run(package: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("\n".join(CANDIDATES) + "\n", encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "edgekit.cli", "run", str(package), "--query", QUERY,
                           "--candidates", str(candidates)], capture_output=True, text=True, timeout=120)


def _assert_one_line_refusal(result: subprocess.CompletedProcess, needle: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and needle in lines[0], lines[0]
    assert len(lines[0]) < 600  # quotes of bad values are short: a 5,000-character field does not flood


def _swap_embeddings_into_layer_slot(data: dict[str, Any]) -> None:
    """The attack the IO-name check exists for: two entries swap the files they point at, every
    entry stays well formed and every hash still matches its file."""
    embeddings, layer = _graph(data, "embeddings"), _graph(data, "layer_001")
    embeddings["path"], layer["path"] = layer["path"], embeddings["path"]
    embeddings["files"], layer["files"] = layer["files"], embeddings["files"]


def _long_path(data: dict[str, Any]) -> None:
    layer = _graph(data, "layer_001")
    layer["path"] = layer["files"][0]["file"] = "graphs/" + "a" * 5000 + ".onnx"


# (attack, what the one line names); the tracebacks issue 13 lists come first
ATTACKS: list[tuple[str, Edit, str]] = [
    ("num_layers 1e12", lambda d: d["ranking"].update(num_layers=10**12),
     "ranking.num_layers must be an integer in 1..1024, got 1000000000000"),
    ("num_layers 1e12 as a float", lambda d: d["ranking"].update(num_layers=1e12),
     "ranking.num_layers must be an integer in 1..1024"),
    ("max_length Infinity (a literal Python's json accepts)", lambda d: d["ranking"].update(max_length=float("inf")),
     "Infinity is not a JSON number"),
    ("a NaN anywhere", lambda d: d["parity"].update(note=float("nan")), "NaN is not a JSON number"),
    ("max_length of 401 digits", lambda d: d["ranking"].update(max_length=10**400),
     "ranking.max_length must be an integer in 1..1048576, got 1000"),
    ("max_length -5", lambda d: d["ranking"].update(max_length=-5), "ranking.max_length must be an integer"),
    ("pad_token_id beyond the vocabulary", lambda d: d["ranking"]["tokenizer"].update(pad_token_id=5000),
     "pad_token_id 5000 is not a row of the embedding table (vocabulary 98)"),
    ("a graph with files: []", lambda d: _graph(d, "layer_001").update(files=[]), "graph 'layer_001' lists no files"),
    ("truncation nope", lambda d: d["ranking"]["tokenizer"].update(truncation="nope"),
     "ranking.tokenizer.truncation 'nope' is not one of"),
    ("dims as a list", lambda d: d["ranking"].update(dims=[1, 2]), "ranking.dims must be an object, got list"),
    ("a 5,000-character path", _long_path,
     "graph 'layer_001': path is a path of 5012 characters; at most 1024 are allowed"),
    ("an embeddings graph in a layer slot", _swap_embeddings_into_layer_slot,
     "graph 'embeddings' (graphs/layer_001.onnx) takes 'hidden_states, attention_mask'"),
    # and their neighbours
    ("label tokens beyond the vocabulary", lambda d: d["ranking"]["scoring"].update(label_tokens={"yes": 4000}),
     "scoring.label_tokens.yes = 4000 is not a row of the embedding table (vocabulary 98)"),
    ("a tokenizer with ids past the table", lambda d: d["ranking"]["embedding_table"].update(shape=[50, 32]),
     "tokenizer.json has 98 tokens, the embedding table has 50 rows"),
    ("a prompt template that allocates", lambda d: d["ranking"].update(
        prompt={"prefix": "", "template": "{query:>999999999}", "suffix": "", "instruction": "x"}),
     "ranking.prompt.template may only hold {instruction}, {query} and {document}"),
    ("a prompt that leaves no room for the pair", lambda d: (d["ranking"]["tokenizer"].update(pair=False), d[
        "ranking"].update(prompt={"prefix": "read " * 100, "template": "{query} {document}", "suffix": "",
                                  "instruction": "x"})),
     "the prompt's prefix and suffix take 64 tokens, max_length is 64: no room for the pair"),
    ("a path spelled twice ('.' part)", lambda d: _graph(d, "layer_001")["files"].append(
        {**_graph(d, "layer_000")["files"][1], "file": "graphs/./layer_000.onnx.data"}),
     "must be a relative path inside the package"),
    ("a control character in a path", lambda d: d["ranking"]["tokenizer"]["files"][0].update(file="tok\x1b[2J.json"),
     "'tok\\x1b[2J.json' must be a relative path inside the package"),
    ("an index on a role that occurs once", lambda d: _graph(d, "embeddings").update(index=3),
     "graph 'embeddings': a 'embeddings' graph has index null"),
    ("a layer asking for a feed the runtime never makes", lambda d: _graph(d, "layer_002")["inputs"].append(
        {"name": "past_key_values", "dtype": "float32", "shape": [1]}),
     "a layer graph takes hidden_states and only"),
    ("a hidden size the graphs do not have", lambda d: d["ranking"].update(hidden_size=7),
     "hidden_states has width 32, the package's hidden_size is 7"),
    ("a bool where a flag's type is a string", lambda d: d["ranking"]["tokenizer"].update(type_ids="no"),
     "ranking.tokenizer.type_ids must be true or false"),
    ("a tensor dim that is a list", lambda d: _graph(d, "head")["inputs"][0].update(shape=[[1]]),
     "graph 'head': inputs[0].shape[0] must be an integer"),
    ("a float16 table in an fp32 package", lambda d: d["ranking"]["embedding_table"].update(dtype="float16"),
     "a fp32 package has a float32 embedding table, not float16"),
    ("format_version 2.0", lambda d: d.update(format_version=2.0), "package format version 2.0 is not supported"),
    ("a calibrated patience of 1e300", lambda d: d["ranking"].update(calibration={
        "policy": "rank-stability", "params": {"patience": 1e300, "min_depth": 1}, "top_k": 3}),
     "ranking.calibration.params.patience must be an integer in 1..1024, got 1e+300"),
]


@pytest.mark.parametrize(("edit", "needle"), [(edit, needle) for _, edit, needle in ATTACKS],
                         ids=[name for name, _, _ in ATTACKS])
def test_an_attacked_manifest_is_refused_in_one_line_with_exit_2(tiny_cross_package: Path, tmp_path: Path,
                                                                   edit: Edit, needle: str) -> None:
    package = _attacked(tiny_cross_package, tmp_path, edit)
    _assert_one_line_refusal(_cli_run(package, tmp_path), needle)


def test_the_api_raises_the_typed_errors(tiny_cross_package: Path, tmp_path: Path) -> None:
    """Parse-time refusals are NotAPackageError from Manifest.load; a swapped graph file passes
    every manifest check and is an IntegrityError when its session is created, before it runs."""
    package = _attacked(tiny_cross_package, tmp_path, lambda d: d["ranking"].update(num_layers=10**12))
    with pytest.raises(NotAPackageError, match="num_layers must be an integer in 1..1024"):
        Manifest.load(package)
    shutil.rmtree(package)
    package = _attacked(tiny_cross_package, tmp_path, _swap_embeddings_into_layer_slot)
    selector = edgekit.load(str(package))  # the manifest is well formed: loading it succeeds
    with pytest.raises(IntegrityError, match="the file is not the graph its entry describes") as caught:
        selector.rank(QUERY, CANDIDATES, top_k=2)
    assert "\n" not in str(caught.value) and caught.value.bad_files == ["graphs/layer_001.onnx"]


def test_every_session_is_checked_in_resident_mode_too(tiny_cross_package: Path, tmp_path: Path) -> None:
    """window >= every graph keeps sessions open across calls: the check runs when they open."""
    package = _attacked(tiny_cross_package, tmp_path, _swap_embeddings_into_layer_slot)
    selector = edgekit.load(str(package), window=64)
    with pytest.raises(IntegrityError, match="graph 'embeddings'"):
        selector.rank(QUERY, CANDIDATES, top_k=2)


def test_an_untouched_package_still_ranks(tiny_cross_package: Path, tmp_path: Path) -> None:
    """The checks refuse attacks, not packages: the exporter's own output passes them and ranks."""
    package = _attacked(tiny_cross_package, tmp_path, lambda d: None)
    result = _cli_run(package, tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(edgekit.load(str(package)).rank(QUERY, CANDIDATES, top_k=3)) == 3


def test_a_token_id_past_the_table_is_refused_at_the_gather() -> None:
    """A crafted tokenizer.json can give ids beyond its declared size (sparse ids): the row
    gather bounds every id, so such an id is a one-line refusal, not an IndexError mid-run."""
    import numpy as np

    from edgekit.runtimes.chunks import ChunkRunner
    from edgekit.runtimes.text import EncodedText

    class NeverRuns:
        input_names, output_names = ("inputs_embeds",), ("hidden_states_out",)

        def run(self, feeds: dict[str, Any], shrink_arena: bool = False) -> list[Any]:
            raise AssertionError("the gather refuses before any graph runs")

    runner = ChunkRunner([EncodedText((1, 7), (0, 0), False)], chunk=4, pad_token_id=0, use_type_ids=False,
                         embedding_table=np.zeros((5, 4), np.float32))
    with pytest.raises(NotAPackageError, match="token id 7 is past the embedding table's 5 rows"):
        runner.run(NeverRuns(), [0], None, per_token=True, graph=None)  # type: ignore[arg-type]


VIDEO_ATTACKS: list[tuple[str, Edit, str]] = [
    ("a 1e12-step training schedule", lambda d: d["video"]["scheduler"].update(num_train_timesteps=10**12),
     "video.scheduler.num_train_timesteps must be an integer in 2..100000"),
    ("NaN guidance", lambda d: d["video"]["svd"].update(max_guidance_scale=float("nan")),
     "NaN is not a JSON number"),
    ("guidance 1e300", lambda d: d["video"]["svd"].update(max_guidance_scale=1e300),
     "video.svd.max_guidance_scale must be"),
    ("frames 1e12", lambda d: d["video"]["conditioning"].update(num_frames=10**12),
     "video.conditioning.num_frames must be an integer in 1..1024"),
    ("a UNet input nothing produces", lambda d: next(g for g in d["graphs"] if g["role"] == "mid_block")[
        "inputs"].append({"name": "ghost", "dtype": "float32", "shape": [1]}),
     "graph 'mid_block' takes 'ghost', which no earlier UNet graph produces"),
    ("an svd decoder fed another name", lambda d: next(g for g in d["graphs"] if g["role"] == "vae_decoder")[
        "inputs"][0].update(name="z"), "an svd vae_decoder takes ['latents']"),
]


@pytest.mark.parametrize(("edit", "needle"), [(edit, needle) for _, edit, needle in VIDEO_ATTACKS],
                         ids=[name for name, _, _ in VIDEO_ATTACKS])
def test_an_attacked_video_manifest_is_refused_in_one_line(svd_package: Path, tmp_path: Path, edit: Edit,
                                                           needle: str) -> None:
    package = _attacked(svd_package, tmp_path, edit)
    with pytest.raises(NotAPackageError) as caught:
        Manifest.load(package)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def _wan_graph(data: dict, role: str) -> dict:
    return next(g for g in data["graphs"] if g["role"] == role)


WAN_ATTACKS: list[tuple[str, Edit, str]] = [
    ("a zero latents_std", lambda d: d["video"]["wan"]["latents_std"].__setitem__(0, 0.0),
     "video.wan.latents_std[0] must be"),
    ("a latents_mean per channel missing", lambda d: d["video"]["wan"]["latents_mean"].pop(),
     "one value per latent channel"),
    ("an odd head dim", lambda d: d["video"]["wan"].update(attention_head_dim=13), "must be even"),
    ("a 1e12-token prompt", lambda d: d["video"]["wan"].update(max_sequence_length=10**12),
     "video.wan.max_sequence_length must be an integer"),
    ("frames not 4k+1", lambda d: d["video"]["conditioning"].update(num_frames=8), "not of the form 4k+1"),
    ("a next-chunk decoder missing a cache", lambda d: _wan_graph(d, "vae_decoder_next")["inputs"].pop(),
     "the next-chunk decoder takes latents and the"),
    ("a block with a ghost input", lambda d: _wan_graph(d, "dit_block")["inputs"].append(
        {"name": "ghost", "dtype": "float32", "shape": [1]}), "a dit_block takes hidden_states"),
    ("a head that outputs another name", lambda d: _wan_graph(d, "dit_head")["outputs"][0].update(name="x"),
     "the wan dit_head outputs ['patches']"),
    ("a temporal factor the decoder does not know", lambda d: d["video"]["wan"].update(vae_scale_factor_temporal=8),
     "vae_scale_factor_temporal 8 is not 4"),
    ("an unknown scheduler key", lambda d: d["video"]["scheduler"].update(mystery_knob=1), "mystery_knob"),
    ("an svd section in a wan package", lambda d: d["video"].update(svd=d["video"]["wan"]), "video.svd"),
    ("no wan section", lambda d: d["video"].pop("wan"), "needs its family section video.wan"),
    ("a tokenizer outside the package", lambda d: d["video"]["wan"]["tokenizer"].update(file="../tokenizer.json"),
     "video.wan.tokenizer.file"),
]


@pytest.mark.parametrize(("edit", "needle"), [(edit, needle) for _, edit, needle in WAN_ATTACKS],
                         ids=[name for name, _, _ in WAN_ATTACKS])
def test_an_attacked_wan_manifest_is_refused_in_one_line(wan_package: Path, tmp_path: Path, edit: Edit,
                                                         needle: str) -> None:
    package = _attacked(wan_package, tmp_path, edit)
    with pytest.raises(NotAPackageError) as caught:
        Manifest.load(package)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_number_too_large_for_a_float_is_refused_by_its_field(tiny_cross_package: Path, tmp_path: Path) -> None:
    """`1e400` is valid JSON that Python reads as inf: the field's own check names it."""
    copy = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, copy)
    data = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    data["ranking"]["max_length"] = 123456789
    text = json.dumps(data, indent=2).replace("123456789", "1e400")
    (copy / "manifest.json").write_text(text, encoding="utf-8")
    resign(copy)
    _assert_one_line_refusal(_cli_run(copy, tmp_path), "ranking.max_length must be an integer in 1..1048576, got inf")


def test_an_oversized_manifest_is_refused_before_it_is_read(tiny_cross_package: Path, tmp_path: Path) -> None:
    copy = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, copy)
    with open(copy / "manifest.json", "ab") as handle:
        handle.truncate((64 << 20) + 1)  # a sparse file: no 64 MiB written
    with pytest.raises(NotAPackageError, match="larger than 64 MiB"):
        Manifest.load(copy)
