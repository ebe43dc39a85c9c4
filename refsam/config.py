"""Typed experiment configuration.

One YAML file per experiment (``configs/*.yaml``) validated into :class:`RefSAMConfig`;
dotted overrides (``--set train.lr=1e-4``) are applied before validation. Unknown keys,
wrong types and missing files raise :class:`~refsam.errors.ConfigError` naming the file,
the key and what was expected. A resolved config dumps back to YAML and has a stable hash
(saved in every checkpoint and logged to MLflow).
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from refsam.errors import ConfigError, did_you_mean
from refsam.storage import Root


class _Strict(BaseModel):
    """Base: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSplit(_Strict):
    """One dataset split, e.g. ``{dataset: ref-youtube-vos, split: train}``."""

    dataset: str
    split: str

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        # The reader registry sits above this module (refsam.data imports refsam.config),
        # so it is looked up when a config names a dataset, not at import.
        from refsam.data.sources import dataset_names

        known = dataset_names()
        if value not in known:
            raise ValueError(f"unknown dataset {value!r}; expected one of {', '.join(known)}")
        return value

    @property
    def tag(self) -> str:
        return f"{self.dataset}/{self.split}"


class AugmentConfig(_Strict):
    """Training augmentation ranges (one draw per clip; ``refsam.data.transforms``)."""

    flip_prob: float = Field(default=0.5, ge=0, le=1)
    crop_prob: float = Field(default=0.5, ge=0, le=1)
    crop_min_scale: float = Field(default=0.6, gt=0, le=1)
    crop_tries: int = Field(default=3, gt=0, description="crops tried to keep the target")
    brightness: float = Field(default=0.2, ge=0, lt=1)
    contrast: float = Field(default=0.2, ge=0, lt=1)
    saturation: float = Field(default=0.2, ge=0, lt=1)


class DataConfig(_Strict):
    """Where raw data and shards live, and how the loader reads them."""

    raw_root: Root = Field(
        default=Path("datasets/raw"), description="local path or fsspec URL (s3://bucket/raw)"
    )
    shards_root: Root = Field(
        default=Path("datasets/shards"),
        description="local path or fsspec URL (s3://bucket/refsam/shards)",
    )
    heldout_root: Root | None = None
    shard_size: int = Field(default=64, gt=0, description="videos per shard")
    ingest_workers: int = Field(default=2, gt=0)
    loader_workers: int = Field(default=0, ge=0)
    shuffle_buffer: int = Field(default=64, ge=0)
    img_size: int | None = Field(default=None, gt=0, description="None: the model's img_size")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class ModelConfig(_Strict):
    """RefSAM model (MODEL.md). Ablations are switches here, never code branches."""

    variant: Literal["tiny", "vit_b", "vit_l", "vit_h"] = "tiny"
    sam_checkpoint: Path | None = None
    text_encoder: str | None = Field(default=None, description="HF path; None = packaged MiniLM")
    text_width: int | None = Field(
        default=None, gt=0, description="the text encoder's hidden size, checked when it loads"
    )
    dense_path: Literal["none", "sentence", "dense_attention", "hierarchical"] = "hierarchical"
    tracking: bool = True
    adapters: bool = True
    temporal: Literal["none", "window", "flow"] = Field(
        default="none",
        description="none: the paper's RefSAM; window: online motion window; flow: the window"
        " plus block-matched pixel motion (MODEL.md)",
    )
    temporal_window: int = Field(
        default=2, ge=2, le=8, description="frames the motion window sees, the current included"
    )
    trainable: list[str] = Field(
        default_factory=lambda: [
            "adapters",
            "temporal",
            "cross_modal_mlp",
            "dense",
            "tracking",
            "mask_decoder",
        ],
        description="module groups that receive gradients",
    )
    iou_loss: bool = False
    overrides: dict[str, Any] = Field(default_factory=dict, description="variant size overrides")


class StageConfig(_Strict):
    """One training stage (e.g. RefCOCO pre-training, then Ref-YouTube-VOS fine-tuning)."""

    name: str
    datasets: list[DataSplit]
    steps: int = Field(gt=0)
    batch_size: int = Field(default=4, gt=0)
    frames_per_clip: int = Field(default=3, gt=0)
    expressions_per_clip: int = Field(
        default=1, gt=0, description="expressions of a video trained on one shared clip"
    )
    clip_stride: int | None = Field(
        default=None,
        gt=0,
        description="None: an anchor frame and T-1 random neighbours near it; k: T frames k "
        "apart in order (1 = consecutive, the spacing an online temporal path sees at inference)",
    )
    lr: float | None = Field(default=None, gt=0, description="None: train.lr")


class TrainConfig(_Strict):
    """Optimisation and run-directory settings."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    devices: int = Field(default=1, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    lr: float = Field(default=1e-4, gt=0)
    lr_mask_decoder: float = Field(default=1e-6, gt=0)
    lr_sam: float = Field(default=1e-4, gt=0, description="SAM encoder parts, when trained")
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    grad_clip: float = Field(default=1.0, ge=0)
    grad_accum: int = Field(default=1, gt=0)
    activation_checkpointing: bool = Field(
        default=False, description="recompute the image encoder's blocks in the backward pass"
    )
    dist_timeout_min: float = Field(
        default=30.0, gt=0, description="timeout of a torchrun job's collectives (minutes)"
    )
    device_memory_gb: float | None = Field(
        default=None, gt=0, description="memory per accelerator; the dry run warns above it"
    )
    min_lr_ratio: float = Field(default=0.01, ge=0, le=1, description="cosine floor / peak lr")
    focal_weight: float = Field(default=1.0, ge=0)
    dice_weight: float = Field(default=1.0, ge=0)
    stages: list[StageConfig] = Field(default_factory=list)
    output_dir: Path = Path("outputs")
    run_name: str = "refsam"
    checkpoint_every: int = Field(default=100, gt=0)
    keep_last: int = Field(default=2, gt=0)
    eval_every: int = Field(default=0, ge=0, description="0: only at the end")
    save_full_model: bool = False
    init_from: Path | None = Field(
        default=None, description="checkpoint whose model weights start stage 1"
    )
    log_every: int = Field(default=10, gt=0, description="steps between metric logs")


class EvalConfig(_Strict):
    """Evaluation sets and the selection metric used to promote `champion`."""

    sets: list[DataSplit] = Field(default_factory=list)
    selection: str = Field(
        default="ref-davis17/valid/J&F", description="<dataset>/<split>/<metric>"
    )
    mask_threshold: float = Field(default=0.5, gt=0, lt=1)
    overlays: int = Field(default=3, ge=0, description="worst sequences rendered as overlays")
    curve_every: int = Field(
        default=0, ge=0, description="steps between validation-curve points (0: no curve)"
    )
    curve_videos: int = Field(
        default=4, gt=0, description="videos of each eval set scored for a curve point"
    )


class TrackingConfig(_Strict):
    """MLflow settings; None uses MLFLOW_TRACKING_URI or the project's sqlite store."""

    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None
    registered_model: str = "refsam"
    champion_alias: str = "champion"


class RefSAMConfig(_Strict):
    """The whole resolved experiment configuration."""

    name: str = "refsam"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def to_yaml(self) -> str:
        """The resolved config as YAML (paths as strings, keys in declaration order)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def config_hash(self) -> str:
        """A stable 16-hex-digit hash of the resolved values (independent of key order)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse_selection(selection: str) -> tuple[str, str, str]:
    """``eval.selection`` ``"ref-davis17/valid/J&F"`` → ``("ref-davis17", "valid", "J&F")``."""
    parts = selection.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ConfigError(
            f"eval.selection {selection!r}: expected <dataset>/<split>/<metric>, e.g. ref-davis17/valid/J&F"
        )
    return parts[0], parts[1], parts[2]


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key segment in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return parts, value


def _list_item(node: list[Any], part: str, text: str, source: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(
            f"{source}: override {text!r}: {part!r} is not an index of a {len(node)}-entry list"
        )
    return int(part)


def _element_model(annotation: Any) -> type[BaseModel] | None:
    """The config model of a field (``StageConfig`` for ``list[StageConfig]``), else None."""
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply dotted overrides (``train.lr=…``, list entries by index: ``train.stages.0.steps=…``)
    to a raw config dict; unknown sections and indexes are errors."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        model: type[BaseModel] | None = RefSAMConfig
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[_list_item(node, part, text, source)]
            else:
                fields = model.model_fields if model is not None else {}
                if model is not None and part not in fields:
                    raise ConfigError(
                        f"{source}: override {text!r}: unknown key "
                        f"{'.'.join(parts[: depth + 1])!r}"
                        f"{did_you_mean(part, fields, '.'.join([*parts[:depth], '']))}"
                    )
                model = _element_model(fields[part].annotation) if model is not None else None
                node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                raise ConfigError(f"{source}: override {text!r}: {part!r} is not a section")
        if isinstance(node, list):
            node[_list_item(node, parts[-1], text, source)] = value
        else:
            node[parts[-1]] = value
    return data


def _sibling_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the config section at ``loc[:-1]`` accepts (for a did-you-mean)."""
    model: type[BaseModel] | None = RefSAMConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part)) if model is not None else None
        model = _element_model(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def _format_validation_error(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            prefix = "".join(f"{p}." for p in err["loc"][:-1])
            hint = did_you_mean(str(err["loc"][-1]), _sibling_keys(err["loc"]), prefix)
            problems.append(f"unknown key {key!r}{hint}")
        elif err["type"] == "missing":
            problems.append(f"missing key {key!r}")
        else:
            got = err.get("input")
            problems.append(f"{key!r}: {err['msg']} (got {got!r})")
    return f"{source}: invalid config: " + "; ".join(problems)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> RefSAMConfig:
    """Validate a raw dict into a config, with errors naming ``source`` and the key."""
    try:
        return RefSAMConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RefSAMConfig:
    """Load ``path`` (YAML), apply ``--set`` overrides and validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    data = apply_overrides(data, overrides or [], str(path))
    return config_from_dict(data, str(path))
