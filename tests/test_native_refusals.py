"""Every refusal the Python runtime makes on a bad package, the native runtime makes too.

One corpus of broken packages (each a copy of the real MiniLM package with one thing wrong) goes
through both runtimes: the Python runtime must raise a typed EdgekitError (opening or ranking)
and edgekit-rank must exit 2 with one `error:` line, without a memory error (ASan build). The
structural corpus runs with file hashing off in both (`verify=False`, `--no-verify`), so each
refusal comes from the check it targets, not from a hash; the tampering corpus runs with hashing
on, as both runtimes do by default.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.errors import EdgekitError
from tests.conftest import CANDIDATES, QUERY
from tests.manifest_edit import rewrite_manifest
from tests.test_native_runtime import rank_native


def _graph(data: dict, name: str) -> dict:
    return next(g for g in data["graphs"] if g["name"] == name)


def _edit(mutate: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda pkg: rewrite_manifest(pkg, mutate)


def _append_byte(relative: str) -> Callable[[Path], None]:
    def apply(pkg: Path) -> None:
        with open(pkg / relative, "ab") as handle:
            handle.write(b"\0")
    return apply


def _symlink_tokenizer(pkg: Path) -> None:
    target = pkg / "tokenizer" / "tokenizer.json"
    moved = pkg.parent / f"{pkg.name}-tokenizer.json"
    shutil.move(target, moved)
    os.symlink(moved, target)


def _swap_graphs(pkg: Path) -> None:
    """layer_000's entry points at layer_001's files and the other way round: the IO names match
    (same kind of graph), so swap the embeddings graph into a layer slot instead."""
    def mutate(data: dict) -> None:
        embeddings, layer = _graph(data, "embeddings"), _graph(data, "layer_000")
        for key in ("path", "files"):
            embeddings[key], layer[key] = layer[key], embeddings[key]
    rewrite_manifest(pkg, mutate)


def _nan_table_row(pkg: Path) -> None:
    """NaN in the rows every sequence reads ([CLS] = 101): a non-finite output, not a ranking."""
    table = np.load(pkg / "graphs" / "word_embeddings.npy", mmap_mode="r+")
    table[101, :] = np.nan
    table.flush()


def _rewrite_graph(pkg: Path, name: str, edit: Callable[[object], None]) -> None:
    """Apply `edit` to graphs/<name>.onnx's ModelProto (weights left external) and record the
    file's new size and sha256 in its entry, so only the graph's content is wrong."""
    import hashlib

    import onnx

    graph_file = pkg / "graphs" / f"{name}.onnx"
    model = onnx.load(str(graph_file), load_external_data=False)
    edit(model)
    onnx.save(model, str(graph_file))
    data = graph_file.read_bytes()
    rewrite_manifest(pkg, lambda d: _graph(d, name)["files"][0].update(bytes=len(data),
                                                                       sha256=hashlib.sha256(data).hexdigest()))


def _relocate_weights(name: str, location: str) -> Callable[[Path], None]:
    """graphs/<name>.onnx reads its external weights from `location` (a copy of its own weights
    file when that is a plain name inside graphs/); only the graph's content is wrong."""
    import onnx

    def apply(pkg: Path) -> None:
        if "/" not in location:
            shutil.copy(pkg / "graphs" / f"{name}.onnx.data", pkg / "graphs" / location)

        def edit(model: object) -> None:
            for tensor in model.graph.initializer:  # type: ignore[attr-defined]
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    next(e for e in tensor.external_data if e.key == "location").value = location
        _rewrite_graph(pkg, name, edit)
    return apply


def _epcontext_node(pkg: Path) -> None:
    """The head graph gains an EPContext node (a compiled blob a provider would load)."""
    import onnx

    _rewrite_graph(pkg, "head", lambda model: model.graph.node.append(  # type: ignore[attr-defined]
        onnx.helper.make_node("EPContext", [], ["blob_out"], domain="com.microsoft")))


def _drop_layer(data: dict) -> None:
    data["graphs"] = [g for g in data["graphs"] if g["name"] != "layer_002"]


CORPUS: dict[str, Callable[[Path], None]] = {
    "manifest missing": lambda pkg: (pkg / "manifest.json").unlink(),
    "manifest not JSON": lambda pkg: (pkg / "manifest.json").write_text("{not json"),
    "not an edgekit manifest": _edit(lambda d: d.update(format="something-else")),
    "format version 3": _edit(lambda d: d.update(format_version=3)),
    "unknown required feature": _edit(lambda d: d.update(requires=["teleportation"])),
    "path escapes with ..": _edit(lambda d: _graph(d, "layer_001").update(path="../layer_001.onnx")),
    "absolute file path": _edit(lambda d: _graph(d, "head")["files"][0].update(file="/etc/passwd")),
    "graph file missing": lambda pkg: (pkg / "graphs" / "layer_003.onnx.data").unlink(),
    "graph file resized": _append_byte("graphs/layer_004.onnx.data"),
    "table resized": _append_byte("graphs/word_embeddings.npy"),
    "tokenizer is a symlink": _symlink_tokenizer,
    "a layer missing": _edit(_drop_layer),
    "no head": _edit(lambda d: d.update(graphs=[g for g in d["graphs"] if g["role"] != "head"])),
    "unknown role": _edit(lambda d: _graph(d, "head").update(role="oracle")),
    "duplicate graph name": _edit(lambda d: _graph(d, "layer_005").update(name="layer_004")),
    "bad truncation": _edit(lambda d: d["ranking"]["tokenizer"].update(truncation="sideways")),
    "pad id past the table": _edit(lambda d: d["ranking"]["tokenizer"].update(pad_token_id=10**6)),
    "table shape differs": _edit(lambda d: d["ranking"]["embedding_table"].update(shape=[30522, 383])),
    "unknown scoring kind": _edit(lambda d: d["ranking"]["scoring"].update(kind="dot")),
    "select scored as logits": _edit(lambda d: d["ranking"]["scoring"].update(kind="logit")),
    "graph swapped into another's slot": _swap_graphs,
    "external data outside the package": _relocate_weights("layer_001", "../../../etc/hostname"),
    "weights from an unlisted file": _relocate_weights("layer_000", "unlisted.data"),
    "EPContext node": _epcontext_node,
    "NaN in the table": _nan_table_row,
}


def _same_size_tamper(pkg: Path) -> None:
    """One byte of a layer's weights flipped: same size, other sha256."""
    path = pkg / "graphs" / "layer_002.onnx.data"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _unsigned_edit(pkg: Path) -> None:
    """manifest.json edited without updating manifest.sha256."""
    text = (pkg / "manifest.json").read_text()
    (pkg / "manifest.json").write_text(text.replace('"max_length": 256', '"max_length": 255'))


TAMPERED: dict[str, Callable[[Path], None]] = {
    "weights changed, same size": _same_size_tamper,
    "manifest edited, digest not": _unsigned_edit,
    "digest missing": lambda pkg: (pkg / "manifest.sha256").unlink(),
    "digest malformed": lambda pkg: (pkg / "manifest.sha256").write_text("not a digest\n"),
}


@pytest.fixture(scope="module")
def candidates_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cands") / "candidates.txt"
    path.write_text("\n".join(CANDIDATES) + "\n")
    return path


@pytest.mark.parametrize("case", list(CORPUS))
def test_both_runtimes_refuse(case: str, native_build: Path, minilm_package: Path, tmp_path: Path,
                              candidates_file: Path) -> None:
    _assert_both_refuse(case, _damaged(minilm_package, tmp_path, CORPUS[case]), native_build, candidates_file,
                        verify=False)


@pytest.mark.parametrize("case", list(TAMPERED))
def test_both_runtimes_refuse_tampering(case: str, native_build: Path, minilm_package: Path, tmp_path: Path,
                                        candidates_file: Path) -> None:
    _assert_both_refuse(case, _damaged(minilm_package, tmp_path, TAMPERED[case]), native_build, candidates_file,
                        verify=True)


def _damaged(package: Path, tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    """A copy of `package` with `damage` done to it."""
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    damage(copy)
    return copy


def _assert_both_refuse(case: str, package: Path, native_build: Path, candidates_file: Path, verify: bool) -> None:
    with pytest.raises(EdgekitError) as python_error:
        edgekit.load(str(package), verify=verify).rank(QUERY, CANDIDATES, top_k=3)
    proc = rank_native(native_build, str(package), "--query", QUERY, "--candidates", str(candidates_file), "--top-k", "3",
                       *([] if verify else ["--no-verify"]))
    assert proc.returncode == 2, (case, proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "stub" not in proc.stderr and "tokenize in the host app" not in proc.stderr, proc.stderr  # refused for the damage
    print(f"{case}: python: {python_error.value} | native: {proc.stderr.strip()}")


def test_the_intact_copy_is_accepted(native_build: Path, minilm_package: Path, tmp_path: Path,
                                     candidates_file: Path) -> None:
    """The corpus's refusals come from the damage, not from the copying."""
    package = tmp_path / "pkg"
    shutil.copytree(minilm_package, package)
    proc = rank_native(native_build, str(package), "--query", QUERY, "--candidates", str(candidates_file), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(json.loads(proc.stdout)["top_k"]) == min(10, len(CANDIDATES))
