"""Benchmarks: each variant runs in its own subprocess and reports one JSON object (DESIGN.md §6)."""
