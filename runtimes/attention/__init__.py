"""Attention benchmark (server side, imports torch): masks as rectangles, a typed registry of
attention kernels, context parallelism over torch.distributed, and the sweep that writes
JSONL/CSV/PNG/markdown. Nothing on edgekit's on-device import path imports this package.

Modules: `masks` (rectangles, exact area), `generators` (the 13 named masks), `convert`
(kernel inputs), `kernels` (registry), `measure` (timing, memory, correctness), `sweep`,
`report`, `cp` + `cp_worker` + `cp_launch` (context parallelism), `cli` (typer commands).
"""
