"""coremltools, imported once and quietly (no torch imported here: the families' option checks
use it before any model loads).

On Linux, importing coremltools logs a "Failed to load ..." line for each macOS-only native
module and warns that torch and scikit-learn are newer than it was tested with; conversions
print progress bars. `quiet()` keeps all of that off the CLI's output.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from typing import Any

from edgekit.errors import MissingDependencyError


def import_coremltools() -> Any:
    """coremltools, or the one-line MissingDependencyError naming the extra; also when numpy is
    2.4 or newer, with which coremltools 9.0 fails inside its torch frontend (FIELD-NOTES)."""
    import numpy

    if tuple(int(part) for part in numpy.__version__.split(".")[:2]) >= (2, 4):
        raise MissingDependencyError(f"coremltools 9.0 converts torch models only with numpy < 2.4 (this is numpy "
                                     f"{numpy.__version__}); pip install 'edgekit[coreml]' (it pins numpy<2.4)")
    try:
        with quiet():  # it logs a line per missing macOS-only native module on import
            import coremltools
    except ImportError:
        raise MissingDependencyError("--format coreml needs coremltools; pip install 'edgekit[coreml]'") from None
    return coremltools


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """coremltools prints progress bars and version warnings on every conversion: keep the CLI's
    output to edgekit's own progress."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)
