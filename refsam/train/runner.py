"""``train(cfg)``: the stages of one config, checkpoints, resume, periodic evaluation.

Stages run in order (``train.stages``: e.g. RefCOCO-family pre-training with images as
pseudo-clips, then Ref-YouTube-VOS fine-tuning), each with a fresh AdamW and warm-up +
cosine schedule, starting from the previous stage's weights. Checkpoints every
``checkpoint_every`` steps and at each stage's end (rank 0 only); ``resume`` (a path or
``"auto"``) continues exactly: weights, optimiser, schedule, scaler, RNG states and the
loader position are restored, so an interrupted CPU run ends with the same weights as an
uninterrupted one. A completed training points ``<output_dir>/<run_name>-latest`` at its
run directory (:func:`refsam.paths.point_latest_run`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from refsam.config import RefSAMConfig, StageConfig
from refsam.eval.sets import evaluate_config_sets
from refsam.eval.sharded import Shard
from refsam.modeling.checkpoint import FORMAT, load_checkpoint, load_model_state
from refsam.paths import point_latest_run, run_dir
from refsam.runlog import NullRunLogger, RunLogger
from refsam.train import distributed as dist_utils
from refsam.train.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    resolve_resume,
    restore_rng_state,
)
from refsam.train.curve import curve_due, measure_curve
from refsam.train.loop import BatchStream, LoaderPosition, resolve_precision, train_step
from refsam.train.results import StageResult, TrainResult, trainable_counts
from refsam.train.rundir_lock import holds_run_dir_lock
from refsam.train.schedule import WarmupCosine, build_optimizer
from refsam.train.state import (
    build_model,
    data_manifests,
    model_state,
    sam_reference,
    seed_everything,
    shard_dir,
)

log = logging.getLogger(__name__)


def resume_run_id(cfg: RefSAMConfig, resume: Path | str | None) -> str | None:
    """The tracking run id stored in the checkpoint ``resume`` resolves to (for the CLI)."""
    path = resolve_resume(resume, run_dir(cfg) / "checkpoints")
    return None if path is None else load_checkpoint(path).get("run_id")


class _Trainer:
    """State shared by the stages of one run (see module docstring)."""

    def __init__(self, cfg: RefSAMConfig, env: dist_utils.DistEnv, logger: RunLogger) -> None:
        self.cfg, self.env, self.logger = cfg, env, logger
        self.run_dir = run_dir(cfg)
        self.manager = CheckpointManager(
            self.run_dir / "checkpoints", keep_last=cfg.train.keep_last
        )
        self.precision = resolve_precision(cfg.train.precision, env.device)
        seed_everything(cfg.train.seed)
        self.model = build_model(cfg).to(env.device)
        self.ddp_model = self.model
        self.sam = sam_reference(cfg)
        self.manifests = data_manifests(cfg)
        self.step = 0
        self.metrics: dict[str, float] = {}
        self.best: float | None = None
        self.last_checkpoint: Path | None = None
        self.best_checkpoint: Path | None = None

    # ---------------------------------------------------------------- checkpoints
    def restore(self, payload: dict[str, Any], path: Path) -> None:
        """Continue the run of checkpoint ``path`` (already read into ``payload``): its
        model tensors, global step, last metrics and best selection value. Its RNG state
        (in :func:`train`) and optimiser, schedule and loader position (in
        :meth:`run_stage`) are restored just before training continues."""
        load_model_state(self.model, payload, path)
        self.step = int(payload["progress"]["step"])
        self.metrics = dict(payload.get("metrics") or {})
        self.best = payload.get("best_metric")
        self.best_checkpoint = self.manager.best_path
        self.last_checkpoint = path
        log.info("resuming from %s at step %d", path, self.step)

    def payload(
        self, stage: int, stage_step: int, optimizer, schedule, scaler, positions
    ) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "format": FORMAT,
            "model": model_state(self.model, full=cfg.train.save_full_model),
            "model_scope": "full" if cfg.train.save_full_model else "trainable",
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "progress": {
                "stage": stage,
                "stage_name": cfg.train.stages[stage].name,
                "stage_step": stage_step,
                "step": self.step,
                "positions": positions,
            },
            "rng": capture_rng_state(),
            "config_yaml": cfg.to_yaml(),
            "config_hash": cfg.config_hash(),
            "sam_checkpoint": self.sam,
            "text_encoder": self.model.text_encoder.identifier if self.model.text_encoder else None,
            "data_manifests": self.manifests,
            "run_id": self.logger.run_id,
            "metrics": dict(self.metrics),
            "best_metric": self.best,
        }

    def save(
        self, stage: int, stage_step: int, optimizer, schedule, scaler, stream: BatchStream
    ) -> None:
        position = {"epoch": stream.position.epoch, "batches": stream.position.batches}
        positions = [position]
        if self.env.distributed:
            positions = [None] * self.env.world_size
            torch.distributed.all_gather_object(positions, position)
        if self.env.is_main:
            payload = self.payload(stage, stage_step, optimizer, schedule, scaler, positions)
            self.last_checkpoint = self.manager.save(payload, self.step)
        dist_utils.barrier(self.env)

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, *, final: bool) -> bool:
        """Score the eval sets, each rank a share of the videos (no rank idles in a barrier
        while rank 0 evaluates alone); True on rank 0 when the selection metric improved."""
        improved = False
        if self.cfg.eval.sets:
            name = "final" if final else f"step-{self.step:08d}"
            overlays = self.cfg.eval.overlays if final else 0
            metrics = evaluate_config_sets(
                self.model,
                self.cfg,
                self.run_dir / "eval" / name,
                self.env.device,
                overlays=overlays,
                shard=Shard(self.env.rank, self.env.world_size),
            )
        if self.env.is_main and self.cfg.eval.sets:
            self.metrics = metrics
            self.logger.log_metrics({f"eval/{k}": v for k, v in self.metrics.items()}, self.step)
            value = self.metrics.get(self.cfg.eval.selection)
            log.info(
                "step %d: %s",
                self.step,
                ", ".join(f"{k}={v:.3f}" for k, v in self.metrics.items() if k.endswith("J&F")),
            )
            if value is not None and (self.best is None or value > self.best):
                self.best, improved = value, True
        dist_utils.barrier(self.env)
        return improved

    # ---------------------------------------------------------------- stages
    def stage_frozen(self, stage: StageConfig) -> list[torch.nn.Parameter]:
        """Trainable parameters a stage cannot train: with one frame per clip the tracking
        module's update (all of it but the initial token) never reaches the loss, and an
        unused trainable parameter breaks DDP (no find_unused_parameters)."""
        tracking = self.model.tracking
        if stage.frames_per_clip > 1 or tracking is None:
            return []
        return [
            p for n, p in tracking.named_parameters() if p.requires_grad and n != "initial_token"
        ]

    def run_stage(
        self, index: int, stage: StageConfig, resume: dict[str, Any] | None
    ) -> StageResult:
        frozen = self.stage_frozen(stage)
        for param in frozen:
            param.requires_grad_(False)
        self.ddp_model = dist_utils.wrap_model(self.model, self.env)
        try:
            return self._run_stage(index, stage, resume)
        finally:
            for param in frozen:
                param.requires_grad_(True)

    def _run_stage(
        self, index: int, stage: StageConfig, resume: dict[str, Any] | None
    ) -> StageResult:
        cfg, env = self.cfg, self.env
        optimizer = build_optimizer(self.model.param_groups(), cfg.train, stage)
        schedule = WarmupCosine(
            optimizer,
            warmup=cfg.train.warmup_steps,
            total=stage.steps,
            min_ratio=cfg.train.min_lr_ratio,
        )
        if (problem := schedule.problem()) is not None:
            log.warning("stage %r: %s", stage.name, problem)
        scaler = torch.amp.GradScaler("cuda") if self.precision.use_scaler else None
        stream = BatchStream(
            [shard_dir(cfg, d.dataset, d.split) for d in stage.datasets],
            img_size=cfg.data.img_size or self.model.img_size,
            frames_per_clip=stage.frames_per_clip,
            expressions_per_clip=stage.expressions_per_clip,
            clip_stride=stage.clip_stride,
            augment=cfg.data.augment,
            batch_size=stage.batch_size,
            seed=cfg.train.seed + 1000 * index,
            rank=env.rank,
            world_size=env.world_size,
            num_workers=cfg.data.loader_workers,
            shuffle_buffer=cfg.data.shuffle_buffer,
        )
        stage_step = 0
        if resume is not None:
            stage_step = int(resume["progress"]["stage_step"])
            optimizer.load_state_dict(resume["optimizer"])
            schedule.load_state_dict(resume["scheduler"])
            if scaler is not None and resume["scaler"]:
                scaler.load_state_dict(resume["scaler"])
            positions = resume["progress"]["positions"]
            position = positions[env.rank] if env.rank < len(positions) else positions[0]
            stream.position = LoaderPosition(int(position["epoch"]), int(position["batches"]))
        start, clips, loss = time.perf_counter(), 0, float("nan")
        with tqdm(
            total=stage.steps,
            initial=stage_step,
            desc=stage.name,
            unit="step",
            disable=not env.is_main,
        ) as bar:  # closed on errors too, so the CLI error line starts clean
            while stage_step < stage.steps:
                stats = train_step(
                    self.ddp_model,
                    stream.next,
                    optimizer,
                    schedule,
                    scaler,
                    device=env.device,
                    precision=self.precision,
                    grad_accum=cfg.train.grad_accum,
                    grad_clip=cfg.train.grad_clip,
                    focal_weight=cfg.train.focal_weight,
                    dice_weight=cfg.train.dice_weight,
                )
                stage_step += 1
                self.step += 1
                clips += stats.clips * env.world_size
                loss = stats.loss
                rate = stats.clips * env.world_size / max(stats.seconds, 1e-9)
                bar.set_postfix(
                    loss=f"{stats.loss:.3f}",
                    lr=f"{max(stats.lrs.values()):.2e}",
                    clips_s=f"{rate:.1f}",
                )
                bar.update(1)
                if env.is_main and (
                    self.step % cfg.train.log_every == 0 or stage_step == stage.steps
                ):
                    metrics = {
                        "train/loss": stats.loss,
                        "train/focal": stats.focal,
                        "train/dice": stats.dice,
                        "train/grad_norm": stats.grad_norm,
                        "train/clips_per_s": rate,
                    }
                    metrics.update({f"lr/{k}": v for k, v in stats.lrs.items()})
                    self.logger.log_metrics(metrics, self.step)
                if env.is_main and curve_due(cfg, self.step):  # watches only: same weights
                    measure_curve(self.model, cfg, env.device, self.step, self.logger)
                improved = False
                if cfg.train.eval_every and self.step % cfg.train.eval_every == 0:
                    improved = self.evaluate(final=False)
                if (
                    self.step % cfg.train.checkpoint_every == 0
                    or stage_step == stage.steps
                    or improved
                ):
                    self.save(index, stage_step, optimizer, schedule, scaler, stream)
                    if improved and env.is_main and self.last_checkpoint is not None:
                        self.best_checkpoint = self.manager.save_best(
                            load_checkpoint(self.last_checkpoint)
                        )
        return StageResult(stage.name, stage.steps, clips, loss, time.perf_counter() - start)


@holds_run_dir_lock  # one training per run directory (LockError)
def train(
    cfg: RefSAMConfig,
    *,
    resume: Path | str | None = None,
    logger: RunLogger | None = None,
    dry_run: bool = False,
    final_eval: bool = True,
) -> TrainResult:
    """Train every stage of ``cfg`` (module docstring); ``dry_run`` only checks and counts;
    ``final_eval=False`` skips the end-of-training evaluation (a caller that scores the
    checkpoint itself), leaving ``cfg`` — and so the checkpoint's config hash — as given."""
    if dry_run:
        from refsam.train.dry_run import dry_run as run_dry

        return run_dry(cfg, resume=resume)
    if not cfg.train.stages:
        from refsam.errors import ConfigError

        raise ConfigError("train.stages: no stage to train")
    start = time.perf_counter()
    env = dist_utils.init_distributed(cfg.train.device, timeout_min=cfg.train.dist_timeout_min)
    logger = logger if (logger is not None and env.is_main) else NullRunLogger()
    try:
        trainer = _Trainer(cfg, env, logger)
        payload = None
        resume_path = resolve_resume(resume, trainer.manager.directory)
        if resume_path is not None:
            payload = load_checkpoint(resume_path, map_location="cpu")
            if payload.get("config_hash") != cfg.config_hash():
                log.warning(
                    "%s was written with another config (hash %s, now %s); continuing with the given config",
                    resume_path,
                    payload.get("config_hash"),
                    cfg.config_hash(),
                )
            trainer.restore(payload, resume_path)
        elif cfg.train.init_from is not None:
            init = load_checkpoint(cfg.train.init_from)
            load_model_state(trainer.model, init, Path(cfg.train.init_from))
            log.info("initialised the model from %s", cfg.train.init_from)
        if env.is_main:
            counts = trainable_counts(trainer.model)
            logger.log_params(
                {
                    "config_hash": cfg.config_hash(),
                    "run_dir": str(trainer.run_dir),
                    **{f"trainable/{k}": v for k, v in counts.items()},
                    "trainable_params": sum(counts.values()),
                }
            )
        start_stage = int(payload["progress"]["stage"]) if payload else 0
        if payload is not None:
            restore_rng_state(payload["rng"])
        results: list[StageResult] = []
        for index, stage in enumerate(cfg.train.stages):
            if index < start_stage:
                continue
            resume_state = payload if (payload is not None and index == start_stage) else None
            if (
                resume_state is not None
                and int(resume_state["progress"]["stage_step"]) >= stage.steps
            ):
                continue
            results.append(trainer.run_stage(index, stage, resume_state))
        improved = trainer.evaluate(final=True) if final_eval else False
        if (
            (improved or trainer.best_checkpoint is None)
            and env.is_main
            and trainer.last_checkpoint
        ):
            payload_last = load_checkpoint(trainer.last_checkpoint)
            payload_last["metrics"], payload_last["best_metric"] = (
                dict(trainer.metrics),
                trainer.best,
            )
            trainer.best_checkpoint = trainer.manager.save_best(payload_last)
        if env.is_main and trainer.last_checkpoint:
            point_latest_run(cfg)  # <output_dir>/<run_name>-latest: this (completed) run
        counts = trainable_counts(trainer.model)
        return TrainResult(
            run_dir=trainer.run_dir,
            last_checkpoint=trainer.last_checkpoint,
            best_checkpoint=trainer.best_checkpoint,
            steps=trainer.step,
            metrics=dict(trainer.metrics),
            stages=results,
            wall_s=time.perf_counter() - start,
            trainable_params=counts,
            model=trainer.model,
        )
    finally:
        dist_utils.cleanup(env)
