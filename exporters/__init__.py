"""Export side (imports torch): one module per model family, graph writers, parity checks."""
