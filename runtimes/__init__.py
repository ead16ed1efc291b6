"""Execution side: backends, the layer stream and schedulers. Imports no torch (see tests)."""
