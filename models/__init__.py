"""The model catalogue: one small declarative spec per supported family (no torch here)."""

from edgekit.models.encoders import ENCODER_FAMILIES, EncoderFamily, family_for_model_type

__all__ = ["ENCODER_FAMILIES", "EncoderFamily", "family_for_model_type"]
