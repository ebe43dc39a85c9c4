"""``refsam train --dry-run``: check every path, build model, optimiser and loaders, count.

Nothing is trained or written. Every missing path is reported at once (ConfigError →
exit 2), checkpoints to start from (``--resume``, ``train.init_from``) included. The ``tiny`` variant is built for real; the SAM-sized variants are built on
PyTorch's ``meta`` device (shapes, no memory, seconds instead of minutes for ViT-H) and
the SAM checkpoint is checked key by key and shape by shape against it, read with
``mmap`` so even a 2.5 GB file costs no RAM. Each stage's loader is built and yields
one batch. The peak accelerator memory of each stage's step is estimated per GPU
(:mod:`refsam.train.memory`, computed on the meta device), with a WARNING line above
``train.device_memory_gb``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from refsam.config import RefSAMConfig
from refsam.data.loader import build_train_loader
from refsam.errors import ConfigError
from refsam.modeling import RefSAM, TextEncoder, format_counts
from refsam.modeling.build import meta_refsam, switches
from refsam.modeling.checkpoint import SAM_PREFIXES, SamCheckpointError
from refsam.modeling.text_encoder import DEFAULT_TEXT_ENCODER
from refsam.paths import describe_run_dirs, has_manifest, run_dir
from refsam.storage import as_path
from refsam.train.checkpoint import CheckpointError, check_resumable, list_step_checkpoints
from refsam.train.memory import memory_report, text_encoder_size
from refsam.train.results import TrainResult, trainable_counts
from refsam.train.schedule import build_optimizer, group_lr
from refsam.train.state import build_model, shard_dir

log = logging.getLogger(__name__)


def check_paths(cfg: RefSAMConfig) -> list[str]:
    """Every input path the config names that is missing (one message each)."""
    problems: list[str] = []
    model = cfg.model
    if model.sam_checkpoint is not None and not Path(model.sam_checkpoint).is_file():
        problems.append(
            f"model.sam_checkpoint: {model.sam_checkpoint} not found (an official sam_vit_*.pth)"
        )
    encoder = model.text_encoder
    if (
        encoder not in (None, DEFAULT_TEXT_ENCODER)
        and not (Path(encoder) / "config.json").is_file()
    ):
        problems.append(
            f"model.text_encoder: {encoder} is not a local model directory with config.json"
        )
    elif model.text_width is not None:
        width = text_encoder_size(encoder)[1]  # from its config.json, nothing loaded
        if width != model.text_width:
            problems.append(
                f"model.text_width: the config says {model.text_width}, the text encoder "
                f"{encoder or DEFAULT_TEXT_ENCODER} has width {width}"
            )
    if cfg.train.init_from is not None:
        problems += _checkpoint_problems("train.init_from", Path(cfg.train.init_from))
    for index, stage in enumerate(cfg.train.stages):
        for split in stage.datasets:
            folder = shard_dir(cfg, split.dataset, split.split)
            if not has_manifest(folder):
                problems.append(
                    f"train.stages[{index}] ({stage.name}): no shards at {folder} "
                    f"(run `refsam ingest --dataset {split.dataset} --split {split.split}`)"
                )
    for split in cfg.eval.sets:
        folder = shard_dir(cfg, split.dataset, split.split)
        if not has_manifest(folder):
            problems.append(f"eval.sets: no shards at {folder}")
    if cfg.data.heldout_root is not None and not as_path(cfg.data.heldout_root).is_dir():
        problems.append(f"data.heldout_root: {cfg.data.heldout_root} is not a directory")
    if Path(cfg.train.output_dir).exists() and not Path(cfg.train.output_dir).is_dir():
        problems.append(f"train.output_dir: {cfg.train.output_dir} exists and is not a directory")
    return problems


def _checkpoint_problems(what: str, path: Path) -> list[str]:
    """[] when ``path`` is a complete refsam training checkpoint, else one message."""
    try:
        check_resumable(path)
    except CheckpointError as exc:
        return [f"{what}: {exc}"]
    return []


def check_resume(cfg: RefSAMConfig, resume: Path | str | None) -> tuple[list[str], str | None]:
    """(problems, the line saying what would be resumed) for ``--resume PATH|auto``; reads
    headers only and, unlike a real ``--resume auto``, moves no bad checkpoint aside."""
    if resume is None:
        return [], None
    if str(resume) != "auto":
        problems = _checkpoint_problems("--resume", Path(resume))
        return problems, None if problems else f"resume: would continue {resume}"
    directory = run_dir(cfg) / "checkpoints"
    for found in reversed(list_step_checkpoints(directory)):
        if not _checkpoint_problems("--resume auto", found):
            return [], f"resume auto: would continue {found}"
        log.warning("--resume auto would skip %s (unreadable)", found)
    return [], f"resume auto: no checkpoint in {directory}, would start fresh"


def check_sam_file(model: RefSAM, path: Path) -> int:
    """Compare a SAM checkpoint's keys and shapes with the model's SAM tensors; the count."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # any unreadable file is bad input, reported with its path
        raise SamCheckpointError(
            f"{path}: not a readable weights-only torch checkpoint ({exc})"
        ) from None
    if not isinstance(state, dict):
        raise SamCheckpointError(f"{path}: expected a flat state dict (an official sam_vit_*.pth)")
    new = model.new_keys()
    own = {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if k.startswith(SAM_PREFIXES) and k not in new
    }
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in own if k in state and tuple(state[k].shape) != own[k])
    if missing or unexpected or wrong:
        raise SamCheckpointError(
            f"{path}: does not match SAM {model.spec.embed_dim}-d/{model.spec.depth} blocks: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
        )
    return len(state)


def _meta_model(cfg: RefSAMConfig) -> RefSAM:
    encoder = TextEncoder(cfg.model.text_encoder)
    return meta_refsam(
        cfg.model.variant, text_encoder=encoder, **switches(cfg.model), **cfg.model.overrides
    )


def dry_run(cfg: RefSAMConfig, resume: Path | str | None = None) -> TrainResult:
    """Check, build and count (module docstring); the summary is ``result.report``."""
    problems = check_paths(cfg)
    resume_problems, resume_line = check_resume(cfg, resume)
    problems += resume_problems
    if problems:
        raise ConfigError("dry run found missing or bad inputs: " + "; ".join(problems))
    if not cfg.train.stages:
        raise ConfigError("train.stages: no stage to train")
    meta = cfg.model.variant != "tiny"
    model = _meta_model(cfg) if meta else build_model(cfg)
    lines = [
        f"config {cfg.name} (hash {cfg.config_hash()}), variant {cfg.model.variant}"
        + (" built on the meta device (shapes only)" if meta else "")
    ]
    if resume_line is not None:
        lines.append(resume_line)
    if meta and cfg.model.sam_checkpoint is not None:
        count = check_sam_file(model, Path(cfg.model.sam_checkpoint))
        lines.append(
            f"SAM checkpoint {cfg.model.sam_checkpoint}: {count} tensors, keys and shapes match"
        )
    elif cfg.model.sam_checkpoint is not None:
        lines.append(f"SAM checkpoint {cfg.model.sam_checkpoint}: loaded strictly")
    elif meta:
        lines.append("WARNING: no model.sam_checkpoint: SAM would start from random weights")
    counts = model.module_parameter_counts()
    for stage in cfg.train.stages:
        optimizer = build_optimizer(model.param_groups(), cfg.train, stage)
        n_opt = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
        lrs = ", ".join(
            f"{name}={group_lr(name, cfg.train, stage):.1e}" for name in model.param_groups()
        )
        dirs = [shard_dir(cfg, d.dataset, d.split) for d in stage.datasets]
        loader = build_train_loader(
            dirs,
            img_size=cfg.data.img_size or model.img_size,
            frames_per_clip=stage.frames_per_clip,
            clip_stride=stage.clip_stride,
            batch_size=stage.batch_size,
            seed=cfg.train.seed,
            augment=True,
            num_workers=0,
            shuffle_buffer=cfg.data.shuffle_buffer,
        )
        batch = next(iter(loader))
        lines.append(
            f"stage {stage.name}: {stage.steps} steps × batch {stage.batch_size} × T={stage.frames_per_clip} "
            f"from {', '.join(d.tag for d in stage.datasets)}; first batch frames {tuple(batch.frames.shape)}; "
            f"AdamW over {n_opt:,} params ({lrs})"
        )
    lines += memory_report(cfg)
    lines.append(format_counts(counts))
    lines.append(f"run dir: {describe_run_dirs(cfg)}; nothing written (dry run)")
    return TrainResult(
        run_dir=run_dir(cfg),
        last_checkpoint=None,
        best_checkpoint=None,
        steps=0,
        metrics={},
        stages=[],
        wall_s=0.0,
        trainable_params=trainable_counts(model),
        dry_run=True,
        parameter_counts=counts,
        report="\n".join(lines),
    )
