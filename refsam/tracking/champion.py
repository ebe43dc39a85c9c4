"""The champion policy of a retrain: register the candidate, compare it on the same eval
data, move ``champion`` only on a strict improvement (ARCHITECTURE.md, ``retrain``).

1. The candidate checkpoint is registered as a new model version (with the value of
   ``eval.selection`` and the manifest hash of that eval split's shards).
2. Without a selection value (its eval set failed or is not in ``eval.sets``) or without
   shards of the selection split, the champion is left alone.
3. If the champion was scored on other eval data (another manifest hash, or none
   recorded), it is re-scored on today's data first (``rescore``: the caller's scorer).
4. :func:`~refsam.tracking.registry.promote_if_better` decides (a tie keeps the champion).

The steps that touch the store or score a model are passed in (``register``, ``promote``,
``rescore``), so an orchestrator can run them as retried tasks; the defaults call the
registry directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from refsam.config import DataSplit, RefSAMConfig, parse_selection
from refsam.data.index import manifest_hash
from refsam.paths import has_manifest, split_dir
from refsam.tracking.registry import (
    Champion,
    Decision,
    get_champion,
    promote_if_better,
    register_checkpoint,
)
from refsam.tracking.resolve import resolve_model_uri
from refsam.tracking.store import is_server, tracking_uri

log = logging.getLogger(__name__)

# (cfg, run id, checkpoint, eval metrics, manifest hash, step) -> version
Register = Callable[[RefSAMConfig, str, Path, dict[str, float], str | None, int | None], str]
# (cfg, version, value, manifest hash, current champion) -> decision
Promote = Callable[[RefSAMConfig, str, float, str, Champion | None], Decision]
# (champion version, split, metric, manifest hash) -> the champion's value on that data
Rescore = Callable[[str, DataSplit, str, str], float]


@dataclass
class ChampionDecision:
    """The registry decision of one retrain run (both numbers included)."""

    selection: str
    promoted: bool
    reason: str
    version: str | None = None
    value: float | None = None
    champion_version: str | None = None
    champion_value: float | None = None
    champion_rescored: bool = False
    manifest_hash: str | None = None
    model_url: str | None = None
    champion_uri: str | None = None
    # the champion's checkpoint file in a local store; None for a tracking server (its
    # artifacts are remote: `--model champion_uri` downloads them when needed)
    champion_checkpoint: str | None = None


def _register(
    cfg: RefSAMConfig,
    run_id: str,
    checkpoint: Path,
    metrics: dict[str, float],
    digest: str | None,
    step: int | None,
) -> str:
    return register_checkpoint(
        run_id, checkpoint, cfg, metrics, manifest_hash=digest, device="cpu", step=step
    )


def _promote(
    cfg: RefSAMConfig, version: str, value: float, digest: str, current: Champion | None
) -> Decision:
    return promote_if_better(None, version, value, digest, current=current, tracking=cfg.tracking)


def selection_manifest(cfg: RefSAMConfig) -> str | None:
    """The manifest hash of the shards of ``eval.selection``'s split (None: no shards)."""
    dataset, split, _ = parse_selection(cfg.eval.selection)
    shard_dir = split_dir(cfg.data.shards_root, dataset, split)
    return manifest_hash(shard_dir) if has_manifest(shard_dir) else None


def decide_champion(
    cfg: RefSAMConfig,
    run_id: str,
    checkpoint: Path,
    metrics: Mapping[str, float],
    *,
    rescore: Rescore,
    step: int | None = None,
    register: Register = _register,
    promote: Promote = _promote,
) -> ChampionDecision:
    """Register ``checkpoint`` (of training run ``run_id``) and move the champion alias to
    it only on a strict improvement of ``eval.selection`` (module docstring).

    ``metrics`` are the candidate's eval metrics as ``<dataset>/<split>/<metric>`` (of
    the eval sets that succeeded); ``step`` is the training step they were measured at.
    """
    dataset, split_name, metric = parse_selection(cfg.eval.selection)
    split = DataSplit(dataset=dataset, split=split_name)
    numbers = dict(metrics)
    digest = selection_manifest(cfg)
    version = register(cfg, run_id, Path(checkpoint), numbers, digest, step)
    value = numbers.get(cfg.eval.selection)
    if value is None or digest is None:
        shard_dir = split_dir(cfg.data.shards_root, dataset, split_name)
        why = (
            "its eval set failed or is not in eval.sets"
            if digest is not None
            else f"no shards at {shard_dir}"
        )
        reason = f"v{version} has no {cfg.eval.selection} ({why}): champion unchanged"
        log.warning(reason)
        return ChampionDecision(
            cfg.eval.selection, False, reason, version, None, manifest_hash=digest
        )
    current = get_champion(tracking=cfg.tracking)
    rescored = False
    if (
        current is not None
        and current.version != version
        and (current.value is None or current.manifest_hash != digest)
    ):
        current = Champion(current.version, rescore(current.version, split, metric, digest), digest)
        rescored = True
    decision = promote(cfg, version, value, digest, current)
    log.info("champion decision: %s", decision.reason)
    champion_uri = f"models:/{cfg.tracking.registered_model}@{cfg.tracking.champion_alias}"
    local = not is_server(tracking_uri(cfg.tracking))
    return ChampionDecision(
        champion_uri=champion_uri,
        champion_checkpoint=(
            str(resolve_model_uri(champion_uri, tracking=cfg.tracking)) if local else None
        ),
        selection=cfg.eval.selection,
        promoted=decision.promoted,
        reason=decision.reason,
        version=version,
        value=decision.value,
        champion_version=decision.champion_version,
        champion_value=decision.champion_value,
        champion_rescored=rescored,
        manifest_hash=digest,
    )
