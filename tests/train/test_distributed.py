"""DDP on CPU: two gloo processes train in step, rank 0 alone logs and writes checkpoints."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from refsam.config import RefSAMConfig, config_from_dict
from refsam.errors import DataError
from refsam.services import free_port
from refsam.train.distributed import DistEnv, init_distributed, wrap_model
from refsam.train.loop import BatchStream

STAGES = (
    "train.stages=[{name: pre, datasets: [{dataset: refcoco, split: train}], steps: 2, batch_size: 2, frames_per_clip: 1},"
    " {name: fine, datasets: [{dataset: ref-youtube-vos, split: train}], steps: 2, batch_size: 1, frames_per_clip: 2}]"
)


def _worker(rank: int, world: int, port: int, cfg_json: dict, out: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    from refsam.runlog import MemoryRunLogger
    from refsam.train.runner import train

    logger = MemoryRunLogger(run_id=f"run-{rank}")
    result = train(config_from_dict(cfg_json), logger=logger)
    state = {k: v.detach().clone() for k, v in result.model.trainable_state_dict().items()}
    torch.save(
        {"state": state, "logged": len(logger.metrics), "steps": result.steps},
        f"{out}/rank{rank}.pt",
    )


def test_world_of_one_needs_no_process_group() -> None:
    env = init_distributed("cpu")
    assert env == DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, env) is model
    assert not torch.distributed.is_initialized()


def test_fewer_shards_than_ranks_is_a_clear_error(make_config: Callable[..., RefSAMConfig]) -> None:
    cfg = make_config()
    shards = Path(cfg.data.shards_root) / "ref-youtube-vos" / "train"  # 2 shards
    stream = BatchStream(
        [shards], img_size=64, frames_per_clip=1, batch_size=1, seed=0, rank=0, world_size=3
    )
    with pytest.raises(DataError, match="every rank and worker needs at least one shard"):
        stream.next()


@pytest.mark.slow
def test_two_process_gloo_training_stays_in_sync(
    make_config: Callable[..., RefSAMConfig], tmp_path: Path
) -> None:
    cfg = make_config(STAGES, "eval.sets=[]", "train.checkpoint_every=1", "train.keep_last=10",
                      "train.run_name=ddp")  # fmt: skip
    out = tmp_path / "ranks"
    out.mkdir()
    mp.start_processes(
        _worker, args=(2, free_port(), cfg.model_dump(mode="json"), str(out)), nprocs=2,
        join=True, start_method="spawn",
    )  # fmt: skip
    rank0 = torch.load(out / "rank0.pt", weights_only=True)
    rank1 = torch.load(out / "rank1.pt", weights_only=True)
    assert rank0["steps"] == rank1["steps"] == 4
    assert rank0["state"].keys() == rank1["state"].keys()
    for key, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][key]), f"{key} differs between ranks"
    assert rank0["logged"] > 0 and rank1["logged"] == 0  # only rank 0 logs
    checkpoints = sorted(p.name for p in (tmp_path / "outputs" / "ddp" / "checkpoints").iterdir())
    assert checkpoints == sorted([f"step-{s:08d}.pt" for s in range(1, 5)] + ["best.pt"])


EVAL_SETS = [("ref-davis17", "valid"), ("ref-youtube-vos", "valid"), ("refcoco", "val")]


def _eval_worker(rank: int, world: int, port: int, checkpoint: str, shards: str, heldout: str,
                 out: str) -> None:  # fmt: skip
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    import json

    from refsam.eval.evaluator import evaluate_model
    from refsam.eval.sharded import Shard
    from refsam.modeling.checkpoint import model_from_checkpoint

    env = init_distributed("cpu", timeout_min=5)
    model, cfg = model_from_checkpoint(Path(checkpoint))
    for dataset, split in EVAL_SETS:
        result = evaluate_model(
            model, dataset, split, shards=Path(shards), out=Path(out) / f"{dataset}-{split}",
            heldout=Path(heldout), device="cpu", threshold=cfg.eval.mask_threshold, overlays=2,
            progress=False, shard=Shard(env.rank, env.world_size),
        )  # fmt: skip
        assert (result is None) == (rank != 0)
        if result is not None:
            (Path(out) / f"{dataset}-{split}.json").write_text(json.dumps(result.metrics))
    torch.distributed.destroy_process_group()


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in (".png", ".csv", ".zip") and "overlays" not in p.parts
    }


@pytest.mark.slow
def test_evaluation_split_over_two_gloo_ranks_equals_one_process(
    make_config: Callable[..., RefSAMConfig], tmp_path: Path
) -> None:
    """Each rank predicts half of the videos, rank 0 scores them all: the same metrics,
    predictions, tables and submission zips as one process (3 families: annotation sets,
    expressions with held-out GT and a server zip, RefCOCO sentences)."""
    import json

    from refsam.eval.evaluator import evaluate_model
    from refsam.train.state import build_model, save_model_checkpoint

    cfg = make_config()
    torch.manual_seed(0)
    model = build_model(cfg)
    checkpoint = save_model_checkpoint(model, cfg, tmp_path / "model.pt")
    shards, heldout = Path(cfg.data.shards_root), Path(cfg.data.heldout_root)
    single = tmp_path / "single"
    expected = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers; restored: later tests train on the default
    try:
        for dataset, split in EVAL_SETS:
            result = evaluate_model(
                model.eval(), dataset, split, shards=shards, out=single / f"{dataset}-{split}",
                heldout=heldout, device="cpu", threshold=cfg.eval.mask_threshold, overlays=2,
                progress=False,
            )  # fmt: skip
            expected[(dataset, split)] = result.metrics
    finally:
        torch.set_num_threads(threads)
    ranks = tmp_path / "ranks"
    mp.start_processes(
        _eval_worker,
        args=(2, free_port(), str(checkpoint), str(shards), str(heldout), str(ranks)),
        nprocs=2, join=True, start_method="spawn",
    )  # fmt: skip
    for dataset, split in EVAL_SETS:
        got = json.loads((ranks / f"{dataset}-{split}.json").read_text())
        want = {k: v for k, v in expected[(dataset, split)].items() if k != "frames_per_s"}
        assert {k: v for k, v in got.items() if k != "frames_per_s"} == want  # exactly
        assert want["frames"] > 0 and "J&F" in want or "oIoU" in want
        assert ("n/motion" in want) == (dataset != "refcoco")  # subsets from rank 0's tables
        name = f"{dataset}-{split}"
        assert _files(ranks / name) == _files(single / name), name
