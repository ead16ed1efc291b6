"""Signed packages: export a tiny package -> sign it -> verify and load it with the public key; then
attack the signed copy (unsigned, another key, a flipped weight byte, an edited manifest, a file added
or removed, a garbage or altered signature, a symlink, a signature that leaves files out) and check
each is refused in one line with exit 2, before anything is loaded. Keys are made here, never committed."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("model_signing")

from cryptography.hazmat.primitives import serialization  # noqa: E402  (after the skip: the sign extra)
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

import edgekit  # noqa: E402
from edgekit.cli import app  # noqa: E402
from edgekit.errors import SignatureError, SigningKeyError  # noqa: E402
from edgekit.signing import SIGNATURE_FILE, sign_package, verify_signature  # noqa: E402
from tests.conftest import CANDIDATES, QUERY  # noqa: E402
from tests.manifest_edit import write_manifest  # noqa: E402
from tests.refusals import assert_refused  # noqa: E402

runner = CliRunner()


def _cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _write_key_pair(directory: Path, name: str, password: bytes | None = None) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = (serialization.BestAvailableEncryption(password) if password is not None
                  else serialization.NoEncryption())
    private = directory / f"{name}.pem"
    public = directory / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh P-256 key pair: (private PEM, public PEM)."""
    return _write_key_pair(tmp_path, "publisher")


@pytest.fixture()
def package(tiny_cross_package: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny cross-encoder package (attacks mutate it)."""
    return Path(shutil.copytree(tiny_cross_package, tmp_path / "pkg"))


@pytest.fixture()
def signed(package: Path, keys: tuple[Path, Path]) -> Path:
    sign_package(package, keys[0])
    return package


def _candidates(tmp_path: Path) -> Path:
    path = tmp_path / "c.txt"
    path.write_text("\n".join(CANDIDATES) + "\n", encoding="utf-8")
    return path


# --- the story that works -------------------------------------------------------------------------
def test_sign_verify_and_load_with_the_public_key_rank_like_the_unsigned_path(package: Path, keys: tuple[Path, Path],
                                                                               tmp_path: Path) -> None:
    private, public = keys
    result = _cli("sign", package, "--private-key", private)
    assert result.exit_code == 0, result.output
    assert (package / SIGNATURE_FILE).is_file() and "signed: wrote" in result.stdout

    result = _cli("verify", package, "--public-key", public)
    assert result.exit_code == 0, result.output
    every_file = [p for p in package.rglob("*") if p.is_file() and p.name != SIGNATURE_FILE]
    assert f"covers {len(every_file)} files" in result.stdout and "files verified" in result.stdout
    assert verify_signature(package, public) == len(every_file)

    plain = edgekit.load(str(package)).rank(QUERY, CANDIDATES, top_k=5)
    checked = edgekit.load(str(package), public_key=public).rank(QUERY, CANDIDATES, top_k=5)
    assert [(r.index, r.score) for r in checked] == [(r.index, r.score) for r in plain]

    result = _cli("run", package, "--public-key", public, "--query", QUERY, "--candidates", _candidates(tmp_path),
                  "--top-k", 5, "--json")
    assert result.exit_code == 0, result.output
    assert [item["index"] for item in json.loads(result.stdout)["top_k"]] == [r.index for r in plain]


def test_a_signed_package_stays_valid_when_moved_and_resigning_replaces_the_signature(
        signed: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    moved = Path(shutil.copytree(signed, tmp_path / "elsewhere" / "renamed"))  # the signature names no folder
    assert verify_signature(moved, keys[1]) > 0
    data = json.loads((moved / "manifest.json").read_text())
    data["parity"]["note"] = "changed on purpose"
    write_manifest(moved, data)  # an intended edit: the digest follows it, the signature does not
    with pytest.raises(SignatureError, match="manifest.json changed"):
        verify_signature(moved, keys[1])
    sign_package(moved, keys[0])  # the publisher signs the new contents
    assert verify_signature(moved, keys[1]) > 0


# --- attacks on a signed package: each one line, exit 2 ---------------------------------------------
def _flip_weight_byte(package: Path, private_key: Path | None = None) -> None:
    weights = package / "graphs" / "layer_000.onnx.data"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))


def _swap_two_layers(package: Path, private_key: Path | None = None) -> None:
    """Still a valid manifest whose files all match their hashes, its digest rewritten to match:
    `verify` without a key passes."""
    data = json.loads((package / "manifest.json").read_text())
    layers = [graph for graph in data["graphs"] if graph["role"] == "layer"]
    layers[0]["index"], layers[1]["index"] = layers[1]["index"], layers[0]["index"]
    write_manifest(package, data)


def _alter_signed_statement(package: Path, private_key: Path) -> None:
    """Rewrite the signed list so it matches a changed weight file, keeping the old signature bytes."""
    _flip_weight_byte(package)
    from edgekit.package_files import sha256_file

    path = package / SIGNATURE_FILE
    bundle = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    for item in statement["predicate"]["resources"]:
        if item["name"] == "graphs/layer_000.onnx.data":
            item["digest"] = sha256_file(package / item["name"])
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(bundle))


def _sign_leaving_graphs_out(package: Path, private_key: Path) -> None:
    """A signature by the right key, made with model-signing directly, that does not cover graphs/."""
    from model_signing import hashing, signing

    config = hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE, "graphs"], ignore_git_paths=False)
    signing.Config().use_elliptic_key_signer(private_key=private_key).set_hashing_config(config).sign(
        package, package / SIGNATURE_FILE)
    _flip_weight_byte(package)


ATTACKS: dict[str, tuple[Callable[[Path, Path], object], str]] = {  # (package, the signer's private key)
    "unsigned": (lambda p, _: (p / SIGNATURE_FILE).unlink(), "is not signed (no package.sig)"),
    "flipped weight byte": (_flip_weight_byte, "changed after signing: graphs/layer_000.onnx.data changed"),
    "swapped layers in manifest.json": (_swap_two_layers, "changed after signing: manifest.json changed"),
    "extra file": (lambda p, _: (p / "notes.txt").write_text("hi"), "changed after signing: notes.txt added"),
    "extra hidden git file": (lambda p, _: (p / ".gitignore").write_text("*"), ".gitignore added"),
    "extra file in graphs/": (lambda p, _: (p / "graphs" / "layer_009.onnx").write_bytes(b"x"),
                              "graphs/layer_009.onnx added"),
    "removed file": (lambda p, _: (p / "tokenizer" / "tokenizer.json").unlink(), "tokenizer/tokenizer.json removed"),
    "garbage signature": (lambda p, _: (p / SIGNATURE_FILE).write_bytes(b"\xff\x00garbage"),
                          "package.sig is not a readable model-signing signature"),
    "empty json signature": (lambda p, _: (p / SIGNATURE_FILE).write_text("{}"), "is not a readable"),
    "altered signed list": (_alter_signed_statement, "was not made with the private key of"),
    "symlink inside": (lambda p, _: (p / "graphs" / "extra.onnx").symlink_to("/etc/hostname"), "is a symlink"),
    "signature leaving files out": (_sign_leaving_graphs_out, "does not cover the whole package (it leaves out graphs)"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attacks_on_a_signed_package_are_refused_by_verify_run_and_load(attack: str, signed: Path,
                                                                        keys: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    mutate, needle = ATTACKS[attack]
    mutate(signed, keys[0])
    public = keys[1]
    assert_refused(_cli("verify", signed, "--public-key", public), needle)
    assert_refused(_cli("run", signed, "--public-key", public, "--query", QUERY, "--candidates",
                         _candidates(tmp_path)), needle)
    with pytest.raises(SignatureError) as refused:
        edgekit.load(str(signed), public_key=public)
    assert needle in str(refused.value) and "\n" not in str(refused.value)


def test_swapped_layers_pass_plain_verify_but_not_the_signature(signed: Path, keys: tuple[Path, Path]) -> None:
    """Why sign: the manifest's digest (manifest.sha256) catches an accidental edit, but whoever can
    edit the package can rewrite the digest too; only the signature ties it to the publisher."""
    _swap_two_layers(signed)
    assert _cli("verify", signed).exit_code == 0
    assert_refused(_cli("verify", signed, "--public-key", keys[1]), "manifest.json changed")


def test_another_publishers_key_is_refused(signed: Path, tmp_path: Path) -> None:
    _, stranger = _write_key_pair(tmp_path, "stranger")
    assert_refused(_cli("verify", signed, "--public-key", stranger),
                    "was not made with the private key of", "verify with the publisher's public key")


def test_load_refuses_before_reading_the_manifest_or_creating_a_session(signed: Path, keys: tuple[Path, Path],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit import manifest as manifest_module
    from edgekit.runtimes import backends

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the package was read before its signature was checked")

    _flip_weight_byte(signed)
    monkeypatch.setattr(manifest_module.Manifest, "load", staticmethod(must_not_run))
    monkeypatch.setattr(backends, "backend_for", must_not_run)
    with pytest.raises(SignatureError, match="graphs/layer_000.onnx.data changed"):
        edgekit.load(str(signed), public_key=keys[1])
    (signed / SIGNATURE_FILE).unlink()
    with pytest.raises(SignatureError, match="is not signed"):
        edgekit.load(str(signed), public_key=keys[1])


# --- key files ---------------------------------------------------------------------------------------
def test_bad_key_files_are_one_line_errors(signed: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    private, public = keys
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    rsa_key = tmp_path / "rsa.pub.pem"
    rsa_key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert_refused(_cli("verify", signed, "--public-key", tmp_path / "missing.pem"), "does not exist")
    assert_refused(_cli("verify", signed, "--public-key", junk), "is not a PEM public key")
    assert_refused(_cli("verify", signed, "--public-key", private), "holds a private key", "-pubout")
    assert_refused(_cli("verify", signed, "--public-key", rsa_key), "elliptic-curve keys")
    assert_refused(_cli("sign", signed, "--private-key", public), "holds a public key")
    assert_refused(_cli("sign", signed, "--private-key", junk), "is not a PEM private key")
    assert_refused(_cli("sign", signed, "--private-key", tmp_path), "cannot read private key file")
    with pytest.raises(SigningKeyError):
        verify_signature(signed, junk)
    assert "-----BEGIN" not in assert_refused(_cli("verify", signed, "--public-key", private))  # no key echoed


def test_an_encrypted_key_needs_its_password(package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = _write_key_pair(tmp_path, "locked", password=b"s3cret")
    assert_refused(_cli("sign", package, "--private-key", private), "it is encrypted: pass its password")
    assert_refused(_cli("sign", package, "--private-key", private, "--key-password", "wrong"),
                    "its password is wrong")
    monkeypatch.setenv("EDGEKIT_KEY_PASSWORD", "s3cret")
    assert _cli("sign", package, "--private-key", private).exit_code == 0
    assert verify_signature(package, public) > 0


def test_sign_refuses_a_package_that_fails_verify(package: Path, keys: tuple[Path, Path]) -> None:
    _flip_weight_byte(package)
    assert_refused(_cli("sign", package, "--private-key", keys[0]), "graphs/layer_000.onnx.data")
    assert not (package / SIGNATURE_FILE).exists()
    assert_refused(_cli("sign", package.parent / "absent", "--private-key", keys[0]), "does not exist")


# --- without the extra ------------------------------------------------------------------------------
def test_unsigned_path_never_imports_model_signing_and_a_missing_extra_is_one_line(signed: Path,
                                                                                   keys: tuple[Path, Path]) -> None:
    """In a fresh process with torch & co. blocked: a plain load + rank imports no signing code; with the
    sign extra 'uninstalled', a load with a public key is a one-line MissingDependencyError; with it
    back, the signed load ranks (the signature check needs no torch either)."""
    code = textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            blocked = {{"torch", "transformers", "diffusers", "optimum", "model_signing"}}
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.blocked:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Block())
        import edgekit
        texts = ["open the file", "a cat"]
        plain = edgekit.load({str(signed)!r}).rank("read a file", texts, top_k=2)
        imported = [m for m in ("model_signing", "edgekit.signing", "cryptography") if m in sys.modules]
        try:
            edgekit.load({str(signed)!r}, public_key={str(keys[1])!r})
            refusal = None
        except Exception as error:
            refusal = [type(error).__name__, str(error)]
        Block.blocked.discard("model_signing")  # the extra is installed again
        signed = edgekit.load({str(signed)!r}, public_key={str(keys[1])!r}).rank("read a file", texts, top_k=2)
        print(json.dumps({{"same": [r.index for r in plain] == [r.index for r in signed], "imported": imported,
                           "refusal": refusal, "torch": "torch" in sys.modules}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["same"] and payload["imported"] == [] and payload["torch"] is False
    kind, message = payload["refusal"]
    assert kind == "MissingDependencyError" and "pip install 'edgekit[sign]'" in message and "\n" not in message
