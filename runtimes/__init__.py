"""Execution side: backends, the layer stream and schedulers. Imports no torch (see tests)."""

if __name__ != "edgekit.runtimes":  # imported as a top-level package from the repository root
    raise ImportError("import edgekit.runtimes, not runtimes: the folder runtimes/ is installed as edgekit.runtimes, and importing it "
                      "under a second name would load every module twice")

