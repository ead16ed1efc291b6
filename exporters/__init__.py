"""Export side (imports torch): one module per model family, graph writers, parity checks."""

if __name__ != "edgekit.exporters":  # imported as a top-level package from the repository root
    raise ImportError("import edgekit.exporters, not exporters: the folder exporters/ is installed as edgekit.exporters, and importing it "
                      "under a second name would load every module twice")

