"""``refsam model info``: parameter table per module; bad input exits 2."""

from __future__ import annotations

import re
from pathlib import Path

from refsam.cli import main

DEMO = str(Path(__file__).resolve().parents[2] / "configs" / "demo-tiny-cpu.yaml")


def _rows(text: str) -> dict[str, tuple[int, int]]:
    rows = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)\s+([\d,]+)\s+([\d,]+)", line.strip())
        if match:
            rows[match[1]] = (int(match[2].replace(",", "")), int(match[3].replace(",", "")))
    return rows


def test_info_vit_b_with_1024_text_width(capsys):
    assert main(["model", "info", "vit_b", "--text-width", "1024"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) >= {
        "image_encoder",
        "adapters",
        "mask_decoder",
        "cross_modal_mlp",
        "dense",
        "tracking",
        "total",
    }
    assert rows["image_encoder"] == (89_670_912, 0)  # SAM ViT-B encoder, frozen
    linears = 1024 * 512 + 512 + 512 * 512 + 512 + 512 * 256 + 256
    assert rows["cross_modal_mlp"][1] == linears + 1  # + the learned output scale
    assert rows["total"][1] == sum(t for name, (_, t) in rows.items() if name != "total")
    assert 8.91e6 <= rows["total"][1] <= 10.89e6  # within 10% of the paper's 9.9M


def test_info_tiny_with_config(tmp_path, capsys):
    config = tmp_path / "demo.yaml"
    config.write_text(
        "model:\n  variant: tiny\n  trainable: [image_encoder, prompt_encoder, cross_modal_mlp, "
        "dense, tracking, mask_decoder, adapters]\n"
    )
    assert main(["model", "info", "tiny", "--config", str(config)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["image_encoder"][0] == rows["image_encoder"][1] > 0
    assert rows["prompt_encoder"][1] == 64  # only the no-mask embedding is used
    assert rows["text_encoder"][0] > 0 and rows["text_encoder"][1] == 0


def test_bad_variant_and_width_exit_2(capsys):
    assert main(["model", "info", "vit_x"]) == 2
    assert "unknown variant" in capsys.readouterr().err
    assert main(["model", "info", "tiny", "--text-width", "-3"]) == 2


def test_info_says_which_build_it_counts(capsys):
    assert main(["model", "info", "tiny"]) == 0
    plain = capsys.readouterr().out
    assert (
        "build: variant defaults, no config" in plain
        and "--config configs/demo-tiny-cpu.yaml" in plain
    )
    assert main(["model", "info", "tiny", "--config", DEMO]) == 0
    demo = capsys.readouterr().out
    assert f"build: the model section of {DEMO} (" in demo
    assert "adapters off" in demo and "adapters on" in plain
    assert _rows(demo)["total"][1] != _rows(plain)["total"][1]  # why the build line matters
    assert main(["model", "info", "vit_b", "--config", DEMO]) == 0
    assert "size overrides are for tiny and are not applied" in capsys.readouterr().out
