"""Core ML graphs (format "mlpackage") beside or instead of the ONNX ones.

coremltools has no ONNX frontend, so every Core ML graph is converted from the same per-layer
torch module the ONNX exporter traced, with the same input and output names:

- options.py: `CoreMLOptions`, the user's `--format/--compute-units/--precision/--palettize`.
- convert.py: one torch stage -> one mlprogram (flexible batch and sequence dims, fp32 IO).
- spec_check.py: what the saved spec declares (IO, flexible dims, precision, ops, weight bytes).
- mil_eval.py: a numpy evaluator over the MIL program (private coremltools API), the numeric
  check that runs off macOS.
- twins.py: add the converted graphs to a staged package and record `exporter.coreml`.
"""
