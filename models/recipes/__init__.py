"""Recipes that build trained checkpoints offline from what every machine has.

`minilm_cross_encoder`: the bundled all-MiniLM-L6-v2 fine-tuned as a cross-encoder on stdlib
docstrings, with deep supervision so intermediate layers score meaningfully (for pruning).
"""
