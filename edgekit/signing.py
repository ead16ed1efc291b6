"""Signed packages: sign a package with an elliptic-curve private key, verify it with the public key.

Signatures are made and checked by the OpenSSF `model-signing` library (key-based signing, offline;
the `sign` extra). Runtime side: no torch; `model_signing` is imported only when a function here is
called, so the unsigned path works without the extra.

Contract:
- The signature is `PKG/package.sig` (`SIGNATURE_FILE`): a Sigstore bundle whose DSSE envelope holds
  an in-toto statement listing the sha256 of every file in the package directory, signed with ECDSA
  (P-256, P-384 or P-521). That file is the only path left out of what is signed: hidden files,
  `.git*` files and files manifest.json does not list are all covered, so adding, removing or
  changing any file after signing fails verification. Empty directories are not covered.
- A package holding a symlink or any other non-regular file is neither signed nor verified.
- `sign_package` signs only a package that passes `Manifest.verify()` (it vouches for a package
  whose files match its manifest), and overwrites an earlier signature.
- `verify_signature` reads no manifest and loads no graph: it can run before anything else touches
  the package. It accepts only a signature that covers every file (made by `sign_package` or
  equivalent settings); one that excludes other paths is refused even if its key matches.
- Every refusal is a one-line `SignatureError` / `SigningKeyError`; a missing library is a
  `MissingDependencyError` naming `pip install 'edgekit[sign]'`.

What a signature does not give: freshness (an older package signed by the same key still
verifies), and protection against files changed between `verify_signature` and the load that
follows it.

Example::

    from edgekit.signing import sign_package, verify_signature
    sign_package("pkg", Path("key.pem"))          # writes pkg/package.sig
    verify_signature("pkg", Path("pub.pem"))      # raises SignatureError if anything changed
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edgekit.errors import MissingDependencyError, PackageNotFoundError, SignatureError, SigningKeyError

SIGNATURE_FILE = "package.sig"
_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # the curves model-signing's EC signer accepts
_GENERATE = "openssl ecparam -genkey -name prime256v1 -noout -out key.pem"


def sign_package(package: str | Path, private_key: str | Path, password: str | None = None) -> Path:
    """Sign every file of `package` with `private_key` (PEM, EC); write and return PKG/package.sig.

    `password` unlocks an encrypted key. Refuses (typed, one line) a package that fails
    `Manifest.verify()`, holds a symlink or special file, and a key that is not a usable EC key."""
    from edgekit.manifest import Manifest

    root = _package_root(package)
    library = _library()
    secret = password.encode() if password is not None else None
    _load_private_key(library, Path(private_key), secret)
    manifest = Manifest.load(root)
    manifest.verify()
    _regular_files(root)
    signature = root / SIGNATURE_FILE
    config = library.signing.Config().use_elliptic_key_signer(private_key=Path(private_key), password=secret)
    try:
        config.set_hashing_config(_hashing_config(library)).sign(root, signature)
    except (OSError, ValueError) as error:  # the package changed under us (a file vanished, a symlink appeared)
        raise SignatureError(f"could not sign {root}: {_first_line(error)}; retry once nothing writes to it") from None
    return signature


def verify_signature(package: str | Path, public_key: str | Path) -> int:
    """Check that PKG/package.sig was made with the private half of `public_key` and that the package
    holds exactly the files it signed, unchanged; return how many files it covers.

    Raises SignatureError (unsigned, unreadable signature, another key, a file added, removed or
    changed, a signature that leaves files out), SigningKeyError (a bad key file), PackageNotFoundError."""
    root = _package_root(package)
    library = _library()
    _load_public_key(library, Path(public_key))
    signature = root / SIGNATURE_FILE
    if not os.path.lexists(signature):
        raise SignatureError(f"{root} is not signed (no {SIGNATURE_FILE}); get a signed package from its publisher, "
                             f"or sign it with `edgekit sign {root} --private-key KEY.pem`")
    files = _regular_files(root)  # refuses a symlinked package.sig too
    config = library.verifying.Config().use_elliptic_key_verifier(public_key=Path(public_key))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the library prints a warning for old signatures
            config.set_hashing_config(_hashing_config(library)).verify(root, signature)
    except Exception as error:  # model-signing refuses with bare ValueError, KeyError, …: fail closed
        raise _refusal(library, root, signature, Path(public_key), files, error) from None
    _check_coverage(signature, _signed_statement(signature))
    return len(files)


# --- the library and the keys ------------------------------------------------------------------
def _library() -> SimpleNamespace:
    """model_signing's three public modules and cryptography's key helpers, or MissingDependencyError."""
    try:
        from cryptography import exceptions
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from model_signing import hashing, signing, verifying
    except ImportError as error:
        raise MissingDependencyError(f"package signatures need the sign extra ({error.name or 'model_signing'} "
                                     "is missing); pip install 'edgekit[sign]'") from None
    return SimpleNamespace(hashing=hashing, signing=signing, verifying=verifying, serialization=serialization,
                           ec=ec, InvalidSignature=exceptions.InvalidSignature,
                           UnsupportedAlgorithm=exceptions.UnsupportedAlgorithm)


def _hashing_config(library: SimpleNamespace) -> Any:
    """sha256 per file, symlinks refused, only the signature file left out (no `.git*` defaults)."""
    return (library.hashing.Config()
            .use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
            .set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False))


def _read_key(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"{what} file {path} does not exist; pass a PEM key file") from None
    except OSError as error:
        raise SigningKeyError(f"cannot read {what} file {path} ({error.strerror}); pass a PEM key file") from None


def _check_curve(key: Any, path: Path, kind: type, what: str) -> None:
    if not isinstance(key, kind) or key.curve.name not in _CURVES:
        name = key.curve.name if isinstance(key, kind) else type(key).__name__.lstrip("_")
        raise SigningKeyError(f"{what} {path} is a {name} key; package signatures use elliptic-curve keys on "
                              f"P-256, P-384 or P-521 (e.g. {_GENERATE})")


def _load_private_key(library: SimpleNamespace, path: Path, password: bytes | None) -> None:
    data = _read_key(path, "private key")
    if b"PUBLIC KEY-----" in data:
        raise SigningKeyError(f"{path} holds a public key; sign with the private key (verify with the public one)")
    try:
        key = library.serialization.load_pem_private_key(data, password)
    except TypeError:  # encrypted without a password, or a password for an unencrypted key
        hint = "it is encrypted: pass its password" if password is None else "it is not encrypted: pass no password"
        raise SigningKeyError(f"cannot load private key {path}: {hint}") from None
    except (ValueError, library.UnsupportedAlgorithm):
        raise SigningKeyError(f"{path} is not a PEM private key, or its password is wrong; "
                              f"pass an EC private key in PEM (e.g. {_GENERATE})") from None
    _check_curve(key, path, library.ec.EllipticCurvePrivateKey, "private key")


def _load_public_key(library: SimpleNamespace, path: Path) -> None:
    data = _read_key(path, "public key")
    if b"PRIVATE KEY-----" in data:
        raise SigningKeyError(f"{path} holds a private key; verify with the public key "
                              f"(openssl ec -in {path} -pubout -out pub.pem) and keep the private key off devices")
    try:
        key = library.serialization.load_pem_public_key(data)
    except (ValueError, library.UnsupportedAlgorithm):
        raise SigningKeyError(f"{path} is not a PEM public key; pass the signer's public key "
                              "(-----BEGIN PUBLIC KEY-----)") from None
    _check_curve(key, path, library.ec.EllipticCurvePublicKey, "public key")


# --- the package's files -----------------------------------------------------------------------
def _package_root(package: str | Path) -> Path:
    root = Path(package)
    if not root.is_dir():
        raise PackageNotFoundError(f"package directory {root} does not exist; export one with `edgekit export`")
    return root.resolve()  # the directory named may be a link; links inside it are refused


def _regular_files(root: Path) -> set[str]:
    """Every file under `root` but the signature, as relative '/' paths; SignatureError on a symlink
    or any other non-regular entry (a signature vouches for bytes, not for where a link points)."""
    found: set[str] = set()
    for directory, subdirectories, names in os.walk(root):
        for name in subdirectories + names:
            path = Path(directory) / name
            mode = path.lstat().st_mode
            relative = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                kind = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
                raise SignatureError(f"{root}/{relative} is {kind}; a signed package holds regular files only "
                                     "(replace it with the file it stands for)")
            if stat.S_ISREG(mode) and relative != SIGNATURE_FILE:
                found.add(relative)
    return found


# --- reading a refusal -------------------------------------------------------------------------
def _signed_statement(signature: Path) -> dict[str, Any]:
    """The in-toto statement inside the bundle (call only once the library authenticated it)."""
    try:
        bundle = json.loads(signature.read_text(encoding="utf-8"))
        return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SignatureError(f"{signature} is not a readable signature ({_first_line(error)}); "
                             "sign the package again with `edgekit sign`") from None


def _check_coverage(signature: Path, statement: dict[str, Any]) -> None:
    """Refuse an authentic signature that leaves any path but itself out of what it signed."""
    serialization = statement.get("predicate", {}).get("serialization", {})
    left_out = sorted(set(serialization.get("ignore_paths", [])) - {SIGNATURE_FILE})
    if left_out or serialization.get("allow_symlinks") is not False:
        what = ", ".join(left_out[:3]) if left_out else "symlinked files"
        raise SignatureError(f"{signature} does not cover the whole package (it leaves out {what}); sign it with "
                             "`edgekit sign`, which covers every file")


def _refusal(library: SimpleNamespace, root: Path, signature: Path, public_key: Path, files: set[str],
             error: Exception) -> SignatureError:
    """Turn what model-signing raised into one line naming the problem and the fix."""
    text = _first_line(error)
    if isinstance(error, library.InvalidSignature) or text.startswith("Key mismatch"):
        return SignatureError(f"{signature} was not made with the private key of {public_key} (another key, or an "
                              "altered signature); verify with the publisher's public key")
    if text.startswith("Signature mismatch"):
        return SignatureError(f"{root} changed after signing: {_changes(root, signature, files)}; get the package "
                              "again from its publisher (or sign it again if you changed it on purpose)")
    return SignatureError(f"{signature} is not a readable model-signing signature ({type(error).__name__}: {text}); "
                          "sign the package again with `edgekit sign`")


def _changes(root: Path, signature: Path, files: set[str]) -> str:
    """'graphs/x.data changed; extra.txt added (+2 more)': the signed list against the package now."""
    from edgekit.package_files import sha256_file

    resources = _signed_statement(signature).get("predicate", {}).get("resources", [])
    signed = {item.get("name"): item.get("digest") for item in resources if isinstance(item, dict)}
    changes = ([f"{name} added" for name in sorted(files - signed.keys())]
               + [f"{name} removed" for name in sorted(signed.keys() - files)]
               + [f"{name} changed" for name in sorted(files & signed.keys())
                  if sha256_file(root / name) != signed[name]])
    if not changes:
        return "its files no longer match the signed list"
    more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
    return "; ".join(changes[:3]) + more


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]
