"""Export refuses bad sources with one clear line, and never leaves a half-written package."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.errors import OutputExistsError, ParityError, SourceModelError
from edgekit.exporters import encoder_export
from edgekit.exporters.encoder_export import export_encoder
from edgekit.manifest import Manifest

runner = CliRunner()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_missing_source_is_a_one_line_cli_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "pkg")])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "does not exist" in result.stderr
    assert not (tmp_path / "pkg").exists()


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceModelError, match="no config.json"):
        export_encoder(str(tmp_path / "empty"), tmp_path / "pkg")


def test_rerank_needs_a_classification_head(tiny_bi_encoder: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceModelError, match="ForSequenceClassification"):
        export_encoder(str(tiny_bi_encoder), tmp_path / "pkg", task="rerank")


def test_plain_encoder_without_task_names_what_it_found(tiny_bi_encoder: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (plain / name).write_bytes((tiny_bi_encoder / name).read_bytes())
    with pytest.raises(SourceModelError, match=r"cannot tell the task.*'bert'.*BertModel"):
        export_encoder(str(plain), tmp_path / "pkg")
    manifest = export_encoder(str(plain), tmp_path / "pkg", task="select")  # explicit: mean pooling
    assert manifest.ranking.scoring.pooling == "mean"


def test_unsupported_model_type(tmp_path: Path) -> None:
    source = tmp_path / "gpt"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "gpt2",
                                                    "architectures": ["GPT2ForSequenceClassification"]}))
    with pytest.raises(SourceModelError, match="'gpt2' is not a supported encoder"):
        export_encoder(str(source), tmp_path / "pkg")


def test_existing_output_needs_force(tiny_cross_encoder: Path, tiny_cross_package: Path, tmp_path: Path) -> None:
    """--force replaces a package; a folder of other files is refused even with --force
    (tests/test_export_safety.py has the rest of that story)."""
    out = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, out)
    with pytest.raises(OutputExistsError, match="--force"):
        export_encoder(str(tiny_cross_encoder), out, max_length=32)
    assert Manifest.load(out).ranking.max_length == 64
    export_encoder(str(tiny_cross_encoder), out, max_length=32, overwrite=True)
    assert Manifest.load(out).ranking.max_length == 32
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="replaces only an edgekit package"):
        export_encoder(str(tiny_cross_encoder), mine, max_length=64, overwrite=True)
    assert (mine / "keep.txt").read_text() == "mine"
    assert _leftovers(tmp_path) == []


def test_parity_failure_leaves_no_package(tiny_cross_encoder: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = encoder_export.family_for_model_type
    monkeypatch.setattr(encoder_export, "family_for_model_type",
                        lambda model_type: dataclasses.replace(real(model_type), tolerance=-1.0))
    with pytest.raises(ParityError, match="differs from torch"):
        export_encoder(str(tiny_cross_encoder), tmp_path / "pkg", max_length=64)
    assert not (tmp_path / "pkg").exists() and _leftovers(tmp_path) == []


def test_max_length_beyond_positions(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(tiny_cross_encoder), "--out", str(tmp_path / "pkg"),
                                 "--max-length", "100000"])
    assert result.exit_code == 2 and "--max-length 100000 is out of range" in result.stderr


def test_unknown_hub_id_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceModelError, match="could not get 'nobody/no-such-model'"):
        export_encoder("nobody/no-such-model", tmp_path / "pkg")
