"""The model catalogue: one small declarative spec per supported family (no torch here)."""

if __name__ != "edgekit.models":  # imported as a top-level package from the repository root
    raise ImportError("import edgekit.models, not models: the folder models/ is installed as edgekit.models, and importing it "
                      "under a second name would load every module twice")


from edgekit.models.encoders import ENCODER_FAMILIES, EncoderFamily, family_for_model_type

__all__ = ["ENCODER_FAMILIES", "EncoderFamily", "family_for_model_type"]
