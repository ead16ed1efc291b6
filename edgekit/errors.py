"""Typed errors. Every user mistake raises one of these with a one-line message that names
the problem and the fix; the CLI prints the message and exits with code 2."""

from __future__ import annotations


class EdgekitError(Exception):
    """Base class: a problem the user can fix. `str(error)` is the one-line message."""


class PackageNotFoundError(EdgekitError):
    """The package directory does not exist."""


class NotAPackageError(EdgekitError):
    """The directory exists but holds no readable edgekit manifest."""


class FormatVersionError(EdgekitError):
    """The manifest's format or version is not one this runtime reads."""


class IntegrityError(EdgekitError):
    """Files of the package are missing, resized or do not match their recorded sha256."""

    def __init__(self, message: str, bad_files: list[str]) -> None:
        super().__init__(message)
        self.bad_files = bad_files


class NonFiniteOutputError(IntegrityError):
    """A graph produced NaN or inf (corrupt weights, or values beyond the package's dtype); the
    message names the graph. Raised instead of a result: a non-finite score never ranks."""


class CandidatesError(EdgekitError):
    """The candidates (file or list) are empty, unreadable, not UTF-8 or malformed."""


class InvalidArgumentError(EdgekitError):
    """An argument is out of range (top-k, window, chunk …)."""


class ProviderUnavailableError(EdgekitError):
    """The requested execution provider is not available in this onnxruntime build or machine."""


class SourceModelError(EdgekitError):
    """The export source cannot be found, loaded or is not a supported checkpoint."""


class ParityError(EdgekitError):
    """An exported graph (or the chained package) differs from the torch model beyond tolerance."""


class OutputExistsError(EdgekitError):
    """The export destination exists and overwriting was not asked for."""


class OutputPathError(EdgekitError):
    """An output path cannot be written: too long, inside a file, a folder where a file goes (or
    the reverse), or its folder is not writable. Raised before any work starts."""


class MissingDependencyError(EdgekitError):
    """An optional dependency (an extra) is needed for this command."""


class BenchmarkError(EdgekitError):
    """A benchmark variant failed in its own process (the message ends with its last error line)."""


class MemoryBudgetError(EdgekitError):
    """No window/chunk plan fits the memory budget (or the budget is not a positive size)."""


class UnknownPolicyError(EdgekitError):
    """A stored calibration names a pruning policy this edgekit does not have."""


class SignatureError(EdgekitError):
    """A package's signature is missing, unreadable, made with another key, or no longer matches
    the package (a file was added, removed or changed after signing)."""


class SigningKeyError(EdgekitError):
    """A signing or verification key file is missing, unreadable, not a PEM elliptic-curve key,
    or the wrong half of the pair."""


class ContainmentError(IntegrityError):
    """A package would make the runtime read something outside itself: a symlink inside the package,
    a file that is not a regular file, or an ONNX graph whose external data is not one of its listed
    files (docs/FORMAT.md, "Containment")."""


class AgreementGateError(EdgekitError):
    """An int8 export's top-K agreement with its own fp32 package is below --min-agreement; the
    message names the layers that cost the most (nothing was written)."""
