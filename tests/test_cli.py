"""The CLI: run / inspect / verify, and every bad input as one line on stderr with exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.cli import app
from tests.conftest import CANDIDATES, QUERY
from tests.manifest_edit import rewrite_manifest

runner = CliRunner()


def _candidates(tmp_path: Path, lines: list[str], name: str = "c.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in result.output
    for needle in needles:
        assert needle in message


def test_run_json_matches_api(tiny_cross_package: Path, tmp_path: Path) -> None:
    import edgekit

    result = _run("run", tiny_cross_package, "--query", QUERY, "--candidates", _candidates(tmp_path, CANDIDATES),
                  "--top-k", 3, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    expected = edgekit.load(str(tiny_cross_package)).rank(QUERY, CANDIDATES, top_k=3)
    assert [item["index"] for item in payload["top_k"]] == [r.index for r in expected]
    assert [item["text"] for item in payload["top_k"]] == [r.text for r in expected]
    for key in ("latency_ms", "peak_rss_mb", "graphs_loaded", "max_resident_graphs", "truncated"):
        assert key in payload["stats"]
    assert payload["stats"]["truncated"] == 1


def test_run_jsonl_and_table(tiny_cross_package: Path, tmp_path: Path) -> None:
    jsonl = _candidates(tmp_path, [json.dumps({"text": text}) for text in CANDIDATES], "c.jsonl")
    result = _run("run", tiny_cross_package, "--query", QUERY, "--candidates", jsonl, "--top-k", 2)
    assert result.exit_code == 0, result.output
    assert "top 2 of 8" in result.stdout and "max resident" in result.stdout


def test_top_k_larger_than_candidates_returns_all_and_says_so(tiny_cross_package: Path, tmp_path: Path) -> None:
    path = _candidates(tmp_path, CANDIDATES[:3])
    result = _run("run", tiny_cross_package, "--query", QUERY, "--candidates", path, "--top-k", 10)
    assert result.exit_code == 0 and "returning all of them" in result.stderr
    payload = json.loads(_run("run", tiny_cross_package, "--query", QUERY, "--candidates", path, "--top-k", 10,
                              "--json").stdout)
    assert len(payload["top_k"]) == 3 and payload["stats"]["top_k_requested"] == 10


def test_inspect_and_verify(tiny_cross_package: Path) -> None:
    inspected = _run("inspect", tiny_cross_package)
    assert inspected.exit_code == 0 and "layer_000" in inspected.stdout and "window 2" in inspected.stdout
    verified = _run("verify", tiny_cross_package)
    assert verified.exit_code == 0 and "verified" in verified.stdout


def test_verify_names_a_corrupted_graph(tiny_cross_package: Path, tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, package)
    target = package / "graphs" / "layer_001.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    _assert_user_error(_run("verify", package), "graphs/layer_001.onnx", "hash mismatch")


@pytest.mark.parametrize(
    "case, needles",
    [
        ("missing-dir", ["does not exist"]),
        ("not-a-package", ["not an edgekit package"]),
        ("future-version", ["format version 99", "re-export"]),
        ("missing-graph", ["missing graphs/head.onnx"]),
    ],
)
def test_bad_packages(tiny_cross_package: Path, tmp_path: Path, case: str, needles: list[str]) -> None:
    package = tmp_path / "pkg"
    if case == "not-a-package":
        package.mkdir()
    elif case in ("future-version", "missing-graph"):
        shutil.copytree(tiny_cross_package, package)
        if case == "future-version":
            rewrite_manifest(package, lambda manifest: manifest.update(format_version=99))
        else:
            (package / "graphs" / "head.onnx").unlink()
    result = _run("run", package, "--query", QUERY, "--candidates", _candidates(tmp_path, CANDIDATES))
    _assert_user_error(result, *needles)


def test_bad_candidate_files(tiny_cross_package: Path, tmp_path: Path) -> None:
    empty = _candidates(tmp_path, ["", "  "], "empty.txt")
    _assert_user_error(_run("run", tiny_cross_package, "--query", QUERY, "--candidates", empty), "no candidates")

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    _assert_user_error(_run("run", tiny_cross_package, "--query", QUERY, "--candidates", latin1),
                       "latin1.txt:2", "UTF-8")

    bad_json = _candidates(tmp_path, ['{"text": "ok"}', "{oops"], "bad.jsonl")
    _assert_user_error(_run("run", tiny_cross_package, "--query", QUERY, "--candidates", bad_json), "bad.jsonl:2")

    no_text = _candidates(tmp_path, ['{"body": "x"}'], "notext.jsonl")
    _assert_user_error(_run("run", tiny_cross_package, "--query", QUERY, "--candidates", no_text), '"text"')

    _assert_user_error(_run("run", tiny_cross_package, "--query", QUERY, "--candidates", tmp_path / "nope.txt"),
                       "does not exist")
    _assert_user_error(_run("run", tiny_cross_package, "--query", QUERY, "--candidates", tmp_path / "c.csv"),
                       ".txt", ".jsonl")


@pytest.mark.parametrize(
    "option, value, needle",
    [("--top-k", 0, "top_k"), ("--top-k", -3, "top_k"), ("--window", 0, "window"), ("--chunk", 0, "chunk"),
     ("--provider", "tpu", "unknown provider")],
)
def test_bad_arguments(tiny_cross_package: Path, tmp_path: Path, option: str, value: object, needle: str) -> None:
    result = _run("run", tiny_cross_package, "--query", QUERY, "--candidates", _candidates(tmp_path, CANDIDATES),
                  option, value)
    _assert_user_error(result, needle)


def test_unavailable_provider_is_an_error_not_a_fallback(tiny_cross_package: Path, tmp_path: Path) -> None:
    from edgekit.errors import ProviderUnavailableError
    from edgekit.runtimes.backends import backend_for

    try:
        backend_for("onnx", "cuda")
        pytest.skip("this machine has the CUDA provider")
    except ProviderUnavailableError:
        pass
    result = _run("run", tiny_cross_package, "--query", QUERY, "--candidates", _candidates(tmp_path, CANDIDATES),
                  "--provider", "cuda")
    _assert_user_error(result, "CUDAExecutionProvider", "onnxruntime-gpu")


def test_bench_attention_is_mounted_on_the_main_cli(tmp_path: Path) -> None:
    result = _run("bench", "attention", "--kernels", "sdpa-math", "--masks", "causal,document", "--seqlens", 64,
                  "--heads", 2, "--head-dim", 16, "--reps", 1, "--threads", 1, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "attention.jsonl").read_text().splitlines()]
    assert {row["mask"] for row in rows} == {"causal", "document"} and all(row["status"] == "ok" for row in rows)
    _assert_user_error(_run("bench", "attention", "--masks", "zigzag", "--out", tmp_path), "zigzag")


def test_usage_errors_are_one_line_through_the_entry_point(tmp_path: Path) -> None:
    import subprocess
    import sys

    for argv in (["run", str(tmp_path), "--query", "q", "--candidates", "c.txt", "--top-k", "abc"], ["run"],
                 ["no-such-command"]):
        result = subprocess.run([sys.executable, "-c", "from edgekit.cli import main; main()", *argv],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0]


def test_export_refuses_to_overwrite_its_own_source(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    result = _run("export", tiny_cross_encoder, "--out", tiny_cross_encoder, "--force")
    _assert_user_error(result, "would replace the source checkpoint")
    assert (tiny_cross_encoder / "config.json").is_file()
    _assert_user_error(_run("export", tiny_cross_encoder, "--out", tiny_cross_encoder.parent, "--force"),
                       "would replace the source")


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda m: m["ranking"].pop("embedding_table"), "missing field 'embedding_table'"),
        (lambda m: m.__setitem__("graphs", []), "graphs must be a non-empty list"),
        (lambda m: m["ranking"]["scoring"].__setitem__("kind", "logits"), "scoring kind"),
        (lambda m: m["graphs"][0]["files"][0].__setitem__("file", 5), "non-empty string"),
        (lambda m: m["graphs"][0]["files"][0].__setitem__("file", "../../etc/passwd"), "inside the package"),
        (lambda m: m["ranking"].__setitem__("calibration", [1]), "calibration must be an object"),
    ],
)
def test_malformed_manifests_are_one_line_errors(tiny_cross_package: Path, tmp_path: Path, mutate, needle: str) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, package)
    rewrite_manifest(package, mutate)
    result = _run("run", package, "--query", QUERY, "--candidates", _candidates(tmp_path, CANDIDATES))
    _assert_user_error(result, "malformed", needle)


def test_unknown_nested_fields_from_a_newer_minor_release_are_ignored(tiny_cross_package: Path, tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, package)

    def add_unknown_fields(manifest: dict) -> None:
        manifest["ranking"]["scoring"]["temperature"] = 1.0
        manifest["graphs"][1]["files"][0]["compression"] = "none"
        manifest["future_field"] = {"x": 1}

    rewrite_manifest(package, add_unknown_fields)
    result = _run("run", package, "--query", QUERY, "--candidates", _candidates(tmp_path, CANDIDATES))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("target", ["graphs/word_embeddings.npy", "tokenizer/tokenizer.json", "graphs/layer_000.onnx"])
def test_corrupted_files_of_the_same_size_are_integrity_errors(tiny_cross_package: Path, tmp_path: Path,
                                                               target: str) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, package)
    path = package / target
    data = bytearray(path.read_bytes())
    data[:16] = b"\x00" * 16  # breaks every header, keeps the size
    path.write_bytes(bytes(data))
    result = _run("run", package, "--query", QUERY, "--candidates", _candidates(tmp_path, CANDIDATES))
    _assert_user_error(result, "re-export")


def test_data_file_errors(tiny_cross_package: Path, tmp_path: Path) -> None:
    _assert_user_error(_run("calibrate", tiny_cross_package, "--data", tmp_path), "cannot read data file")
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes("\ufeff".encode() + json.dumps({"query": "q", "candidates": ["a", "b"]}).encode() + b"\n")
    from edgekit.dataset import read_examples

    assert read_examples(bom)[0].query == "q"
