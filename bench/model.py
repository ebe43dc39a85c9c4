"""Model costs: RefSAM vs bare SAM per frame, 8 vs 1 expressions, online RSS, parameters.

(a) RefSAM ÷ bare SAM forward per frame at the same size (vit_b at 512 px with --quick,
    1024 px with --full; tiny reported too, no goal). Bare SAM = segment_anything's
    encoder + prompt encoder (one point) + mask decoder; RefSAM = encode_image + decode
    (text encoded once per video, reported apart). Goal ≤ 1.05 for vit_b.
(b) Per-frame cost of the online predictor with 8 vs 1 expressions on the same video,
    vit_b, with ``model.temporal`` none and flow (the motion window with its pixel level,
    the costlier temporal path; its own cost is reported as flow ÷ none). Goal ≤ 1.3 for
    both.
(c) Online inference peak RSS, 100 ÷ 10 frames, each in a fresh subprocess, temporal none
    and flow (its state is a fixed window of frames). Goal ≤ 1.05 for both.
(d) Trainable parameters per module, vit_b, with MiniLM and with a 1024-d text width.
    Goal: within 10% of the paper's 9.9M for the latter.
Random weights (no SAM checkpoint is available offline): costs do not depend on them.
Sides are interleaved, warmed up, repeated; medians. ``--device auto`` uses CUDA if present
(wall time); on CPU the cost is process CPU time with one torch thread (shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from refsam.eval.predictor import OnlinePredictor  # noqa: E402
from refsam.modeling import TextEncoder, build_refsam, count_parameters, get_variant  # noqa: E402
from refsam.modeling.device import resolve_device  # noqa: E402
from refsam.modeling.preprocess import normalize_and_pad  # noqa: E402
from refsam.modeling.sam import build_sam  # noqa: E402

PAPER_TRAINABLE_VIT_B = 9.9e6
TEMPORAL = "flow"  # the temporal path measured beside none (window + its pixel level)
EXPRESSIONS = [
    "the red car on the left",
    "a man riding a bike",
    "the small dog running to the right",
    "a person in a white shirt",
    "the tree behind the house",
    "a bird",
    "the second zebra from the left walking away",
    "a boat",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", default=True, help="vit_b at 512 px (default)"
    )
    size.add_argument("--full", action="store_true", help="vit_b at 1024 px, more repeats")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: 1 on CPU, so process CPU time is a clean cost measure)",
    )
    parser.add_argument("--rss-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--temporal", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--img-size", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    sides: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: list[str]
) -> dict[str, float]:
    """Median seconds per side: the ``warmup`` sides run once first, then all sides alternate
    (order reversed every other repeat).

    On CUDA: wall time (synchronised). On CPU: process CPU time with one torch thread,
    which time slices taken by other processes on a shared machine do not inflate (with
    several threads, spinning at barriers would); wall time is kept as ``*_wall``.
    """
    for name in warmup:
        sides[name]()
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    wall: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(repeats):
        order = list(sides.items())
        for name, fn in order if repeat % 2 == 0 else order[::-1]:
            synchronize(device)
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            wall[name].append(time.perf_counter() - wall_start)
            cpu[name].append(time.process_time() - cpu_start)
            log(f"  {name}: wall {wall[name][-1]:.3f} s, cpu {cpu[name][-1]:.3f} s")
    primary = wall if device.type == "cuda" else cpu
    result = {name: statistics.median(values) for name, values in primary.items()}
    result |= {f"{name}_wall": statistics.median(values) for name, values in wall.items()}
    return result


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def frames_of(n: int, height: int, width: int, seed: int = 0):
    """A synthetic video as an iterator (nothing kept): n H×W×3 uint8 frames."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def per_frame_costs(
    variant: str, img_size: int, device: torch.device, text: TextEncoder, repeats: int
) -> dict[str, float]:
    """(a) bare SAM vs RefSAM per frame; (b) predictor per frame with 1 vs 8 expressions.

    All four sides are interleaved in one loop; the predictor sides run a one-frame
    video (4:3, longest side = img_size) and share the warmed-up RefSAM model.
    """
    log(f"[{device}] {variant}@{img_size}: building")
    torch.manual_seed(0)
    sam = build_sam(get_variant(variant, img_size=img_size)).to(device)
    model = build_refsam(variant, text_encoder=text, img_size=img_size).to(device).eval()
    torch.manual_seed(0)
    windowed = build_refsam(variant, text_encoder=text, img_size=img_size, temporal=TEMPORAL)
    windowed = windowed.to(device).eval()
    frame = torch.randint(0, 256, (1, 3, img_size, img_size), dtype=torch.uint8, device=device)
    point = (
        torch.tensor([[[img_size / 2, img_size / 2]]], device=device),
        torch.ones(1, 1, device=device),
    )
    predictors = {
        "": OnlinePredictor(model, device=device),
        "_flow": OnlinePredictor(windowed, device=device),
    }
    video_hw = (img_size * 3 // 4, img_size)

    with torch.inference_mode():
        text_one = model.encode_text(EXPRESSIONS[:1])

        def bare() -> None:
            embedding = sam.image_encoder(normalize_and_pad(frame, img_size))
            sparse, dense = sam.prompt_encoder(points=point, boxes=None, masks=None)
            pe = sam.prompt_encoder.get_dense_pe()
            sam.mask_decoder(embedding, pe, sparse, dense, multimask_output=False)

        def refsam() -> None:
            image = model.encode_image(frame)
            model.decode(image, text_one, model.init_track_state(1))

        def video(n_expressions: int, temporal: str = "") -> Callable[[], None]:
            predictor = predictors[temporal]

            def run() -> None:
                for _ in predictor.track(frames_of(1, *video_hw), EXPRESSIONS[:n_expressions]):
                    pass

            return run

        sides = {
            "bare_sam": bare,
            "refsam": refsam,
            "video_1_expr": video(1),
            "video_8_expr": video(8),
            "video_1_expr_flow": video(1, "_flow"),
            "video_8_expr_flow": video(8, "_flow"),
        }
        times = interleaved(sides, device, repeats, warmup=["bare_sam", "refsam"])
        sam.requires_grad_(False)  # FlopCounterMode's module tracker hooks grad-requiring inputs
        model.requires_grad_(False)
        windowed.requires_grad_(False)
        flops = {name: count_flops(fn) for name, fn in sides.items()}
        encode_text_s = statistics.median(
            _timed(lambda: model.encode_text(EXPRESSIONS[:1]), device) for _ in range(3)
        )
    clock = "wall" if device.type == "cuda" else "cpu"
    return {
        f"bare_sam_{clock}_s_per_frame": times["bare_sam"],
        f"refsam_{clock}_s_per_frame": times["refsam"],
        f"predictor_1_expr_{clock}_s_per_frame": times["video_1_expr"],
        f"predictor_8_expr_{clock}_s_per_frame": times["video_8_expr"],
        "bare_sam_wall_s_per_frame": times["bare_sam_wall"],
        "refsam_wall_s_per_frame": times["refsam_wall"],
        "predictor_1_expr_wall_s_per_frame": times["video_1_expr_wall"],
        "predictor_8_expr_wall_s_per_frame": times["video_8_expr_wall"],
        f"predictor_1_expr_flow_{clock}_s_per_frame": times["video_1_expr_flow"],
        f"predictor_8_expr_flow_{clock}_s_per_frame": times["video_8_expr_flow"],
        "encode_text_wall_s_once_per_video": encode_text_s,
        **{f"{name}_gflop": value / 1e9 for name, value in flops.items()},
    }


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul/conv FLOPs of one call (torch's FlopCounterMode): a noise-free cost figure."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def rss_worker(
    n_frames: int, variant: str, img_size: int | None, temporal: str, device: torch.device
) -> None:
    """Run the online predictor over n synthetic 480×640 frames; print peak RSS (MB) as JSON."""
    torch.manual_seed(0)
    overrides = {"img_size": img_size} if img_size else {}
    model = build_refsam(variant, temporal=temporal, **overrides)
    predictor = OnlinePredictor(model, device=device)
    for _ in predictor.track(frames_of(n_frames, 480, 640), EXPRESSIONS[:2]):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    print(json.dumps({"peak_rss_mb": peak, "peak_gpu_mb": gpu}))


def peak_rss(
    n_frames: int, variant: str, img_size: int | None, device: torch.device, temporal: str
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--rss-worker",
        str(n_frames),
        "--variant",
        variant,
        "--temporal",
        temporal,
        "--device",
        str(device),
    ]
    if img_size:
        command += ["--img-size", str(img_size)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads or (1 if device.type == "cpu" else os.cpu_count() or 1))
    if args.rss_worker is not None:
        rss_worker(args.rss_worker, args.variant, args.img_size, args.temporal, device)
        return
    full = args.full
    vit_size = 1024 if full else 512
    repeats = 5 if full else 3
    text = TextEncoder()
    figures: dict[str, object] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }

    clock = "wall" if device.type == "cuda" else "cpu"
    tiny = per_frame_costs("tiny", 128, device, text, repeats=5)
    vit_b = per_frame_costs("vit_b", vit_size, device, text, repeats=repeats)
    for name, costs in (("tiny@128", tiny), (f"vit_b@{vit_size}", vit_b)):
        print(
            f"[{device}] {name} ({clock} s per frame): bare SAM "
            f"{costs[f'bare_sam_{clock}_s_per_frame']:.4f}, RefSAM "
            f"{costs[f'refsam_{clock}_s_per_frame']:.4f}; predictor 1 expr "
            f"{costs[f'predictor_1_expr_{clock}_s_per_frame']:.4f}, 8 expr "
            f"{costs[f'predictor_8_expr_{clock}_s_per_frame']:.4f}; with temporal flow "
            f"{costs[f'predictor_1_expr_flow_{clock}_s_per_frame']:.4f} / "
            f"{costs[f'predictor_8_expr_flow_{clock}_s_per_frame']:.4f}"
        )
    figures["tiny_128"] = tiny
    figures[f"vit_b_{vit_size}"] = vit_b

    rss_variant, rss_size = ("vit_b", 512) if (full and device.type == "cuda") else ("tiny", None)
    log(f"[{device}] online peak RSS ({rss_variant}): 10 and 100 frames in subprocesses")
    rss: dict[str, dict[int, dict]] = {}
    for temporal in ("none", TEMPORAL):
        rss[temporal] = {n: peak_rss(n, rss_variant, rss_size, device, temporal) for n in (10, 100)}
        print(
            f"[{device}] online {rss_variant}, temporal {temporal}: peak RSS 10 frames "
            f"{rss[temporal][10]['peak_rss_mb']:.0f} MB, 100 frames {rss[temporal][100]['peak_rss_mb']:.0f} MB"
        )
    rss10, rss100 = rss["none"][10], rss["none"][100]
    figures["online_peak_rss_mb"] = {
        "variant": rss_variant,
        "frames_10": rss10,
        "frames_100": rss100,
        "flow_frames_10": rss[TEMPORAL][10],
        "flow_frames_100": rss[TEMPORAL][100],
    }

    minilm = count_parameters("vit_b", text_encoder=text)
    wide = count_parameters("vit_b", text_width=1024)
    trainable_minilm = sum(t for _, t in minilm.values())
    trainable_wide = sum(t for _, t in wide.values())
    print(
        f"vit_b trainable parameters: {trainable_minilm / 1e6:.2f}M (MiniLM), {trainable_wide / 1e6:.2f}M (1024-d text), paper 9.9M"
    )
    figures["vit_b_params_minilm"] = {
        k: {"total": t, "trainable": tr} for k, (t, tr) in minilm.items()
    }
    figures["vit_b_params_text1024"] = {
        k: {"total": t, "trainable": tr} for k, (t, tr) in wide.items()
    }
    figures["vit_b_trainable_minilm"] = trainable_minilm
    figures["vit_b_trainable_text1024"] = trainable_wide

    ratios = {
        f"refsam_over_sam_vit_b_{vit_size}": vit_b[f"refsam_{clock}_s_per_frame"]
        / vit_b[f"bare_sam_{clock}_s_per_frame"],
        "refsam_over_sam_tiny_128": tiny[f"refsam_{clock}_s_per_frame"]
        / tiny[f"bare_sam_{clock}_s_per_frame"],
        "expr8_over_expr1_vit_b": vit_b[f"predictor_8_expr_{clock}_s_per_frame"]
        / vit_b[f"predictor_1_expr_{clock}_s_per_frame"],
        "rss_100_over_10_frames": rss100["peak_rss_mb"] / rss10["peak_rss_mb"],
        "expr8_over_expr1_vit_b_flow": vit_b[f"predictor_8_expr_flow_{clock}_s_per_frame"]
        / vit_b[f"predictor_1_expr_flow_{clock}_s_per_frame"],
        "flow_over_none_predictor_1_expr_vit_b": vit_b[f"predictor_1_expr_flow_{clock}_s_per_frame"]
        / vit_b[f"predictor_1_expr_{clock}_s_per_frame"],
        "rss_100_over_10_frames_flow": rss[TEMPORAL][100]["peak_rss_mb"]
        / rss[TEMPORAL][10]["peak_rss_mb"],
        "trainable_text1024_over_paper": trainable_wide / PAPER_TRAINABLE_VIT_B,
        f"flops_refsam_over_sam_vit_b_{vit_size}": vit_b["refsam_gflop"] / vit_b["bare_sam_gflop"],
        "flops_expr8_over_expr1_vit_b": vit_b["video_8_expr_gflop"] / vit_b["video_1_expr_gflop"],
    }
    meets = (
        ratios[f"refsam_over_sam_vit_b_{vit_size}"] <= 1.05
        and ratios["expr8_over_expr1_vit_b"] <= 1.3
        and ratios["rss_100_over_10_frames"] <= 1.05
        and ratios["expr8_over_expr1_vit_b_flow"] <= 1.3
        and ratios["rss_100_over_10_frames_flow"] <= 1.05
        and abs(ratios["trainable_text1024_over_paper"] - 1) <= 0.10
    )
    write_result(
        "model",
        params={
            "mode": "full" if full else "quick",
            "device": str(device),
            "vit_b_img_size": vit_size,
            "repeats": repeats,
            "threads": torch.get_num_threads(),
            "clock": clock,
        },
        figures=figures,
        ratios=ratios,
        goal="vit_b RefSAM/SAM <= 1.05; 8/1 expressions <= 1.3 (temporal none and flow); RSS 100/10 frames <= 1.05 (none and flow); trainable (1024-d text) within 10% of 9.9M",
        meets_goal=meets,
    )


if __name__ == "__main__":
    main()
