"""RefSAM model: SAM parts, text prompts, dense attention, tracking (MODEL.md)."""

from refsam.modeling.build import (
    build_refsam,
    build_refsam_from_config,
    count_parameters,
    format_counts,
)
from refsam.modeling.checkpoint import SamCheckpointError
from refsam.modeling.features import ImageFeatures, TextFeatures, TrackState
from refsam.modeling.groups import GROUPS
from refsam.modeling.refsam import RefSAM, text_encoder_id
from refsam.modeling.text_encoder import DEFAULT_TEXT_ENCODER, TextEncoder
from refsam.modeling.variants import VARIANTS, VariantSpec, get_variant

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "GROUPS",
    "VARIANTS",
    "ImageFeatures",
    "RefSAM",
    "SamCheckpointError",
    "TextEncoder",
    "TextFeatures",
    "TrackState",
    "VariantSpec",
    "build_refsam",
    "build_refsam_from_config",
    "count_parameters",
    "format_counts",
    "get_variant",
    "text_encoder_id",
]
