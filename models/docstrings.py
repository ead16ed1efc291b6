"""Offline text every machine has: passages from the Python standard library's docstrings.

Used to build the selection dev set (scripts/build_devset.py, from DEVSET_MODULES) and, from
the other stdlib modules only, training data — so evaluation text never leaks into training.
A passage is "qualified.name(signature): docstring without its first sentence"; its summary
is that first sentence (a natural query for the passage).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

DEVSET_MODULES = tuple(
    ["argparse", "ast", "base64", "bisect", "calendar", "codecs", "collections", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.utils", "enum", "fnmatch", "fractions", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging", "mimetypes", "operator", "os", "os.path", "pathlib", "pickle", "pkgutil", "platform", "pprint", "queue", "random", "re", "secrets", "shelve", "shlex", "shutil", "smtplib", "socket", "sqlite3", "statistics", "string", "struct", "subprocess", "sysconfig", "tarfile", "tempfile", "textwrap", "threading", "tokenize", "traceback", "typing", "unicodedata", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "xml.etree.ElementTree", "zipfile", "zlib"]
)
MAX_PASSAGE_CHARS = 360


@dataclass(frozen=True)
class Passage:
    name: str
    summary: str
    passage: str


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def training_modules() -> list[str]:
    """Top-level stdlib modules whose docstrings are NOT in the dev set (importable, public)."""
    excluded = {name.split(".")[0] for name in DEVSET_MODULES}
    names = getattr(sys, "stdlib_module_names", ())
    return sorted(n for n in names if not n.startswith("_") and n not in excluded and n not in ("antigravity", "this"))


def _objects(module_name: str, module: object) -> list[tuple[str, object]]:
    objects = []
    for name, member in sorted(inspect.getmembers(module), key=lambda item: item[0]):
        if name.startswith("_"):
            continue
        if inspect.isclass(member) and getattr(member, "__module__", "").split(".")[0] == module_name.split(".")[0]:
            objects += [(f"{name}.{m}", f) for m, f in sorted(vars(member).items()) if not m.startswith("_")
                        and callable(f)]
        elif callable(member):
            objects.append((name, member))
    return objects


def collect_passages(modules: Iterable[str]) -> list[Passage]:
    """Passages of public functions and methods whose docstring has a summary and a body.

    Modules that fail to import (platform-specific ones) are skipped; duplicate bodies
    (aliases) are kept once. Deterministic for one Python version.
    """
    seen: set[str] = set()
    passages = []
    for module_name in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(module_name)
        except Exception:  # noqa: BLE001 - any import failure just means "not on this platform"
            continue
        for name, member in _objects(module_name, module):
            doc = inspect.getdoc(member)
            if not doc:
                continue
            flat = " ".join(doc.split())
            match = re.match(r"(.+?[.!?])(\s|$)", flat)  # the first sentence is the summary
            summary = match.group(1) if match else flat
            rest = flat[len(summary):].strip()
            if len(words(summary)) < 5 or len(words(rest)) < 12 or rest in seen:
                continue
            seen.add(rest)
            try:
                signature = re.sub(r" at 0x[0-9a-f]+", "", str(inspect.signature(member)))  # no addresses
            except (TypeError, ValueError):
                signature = "(...)"
            text = f"{module_name}.{name}{signature}: {rest}"[:MAX_PASSAGE_CHARS]
            passages.append(Passage(f"{module_name}.{name}", summary, text))
    return passages
