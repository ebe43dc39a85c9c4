"""Overlays a person looks at: labelled contact-sheet tiles, a WebM without OpenCV's notice."""

from __future__ import annotations

import os
import re

import cv2
import numpy as np
import pytest

from refsam.eval.visualize import contact_sheet, native_stderr_without, write_webm


def _tiles(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 200, (60, 100, 3), dtype=np.uint8) for _ in range(count)]


def test_contact_sheet_tiles_carry_their_labels() -> None:
    tiles = _tiles(3)
    plain = contact_sheet(tiles, columns=3, gap=4)
    labelled = contact_sheet(tiles, labels=["frame 0", "frame 7", "frame 14"], columns=3, gap=4)
    assert plain.shape == labelled.shape
    changed = np.any(plain != labelled, axis=2)
    for column in range(3):  # each tile: its top-left corner changed, the rest is untouched
        x = column * 104
        assert changed[:20, x : x + 60].any()
        assert not changed[30:, x : x + 100].any()
    # a different label draws differently
    other = contact_sheet(tiles, labels=["frame 1", "frame 7", "frame 14"], columns=3, gap=4)
    assert np.any(other[:20, :60] != labelled[:20, :60])
    assert np.array_equal(other[:, 104:], labelled[:, 104:])
    with pytest.raises(ValueError, match="2 labels for 3 images"):
        contact_sheet(tiles, labels=["a", "b"])


def test_native_stderr_filter_drops_only_the_matching_lines(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with native_stderr_without(re.compile("not supported")):
        os.write(2, b"OpenCV: FFMPEG: tag 'VP90' is not supported\nreal trouble\n")
    err = capfd.readouterr().err
    assert "real trouble" in err and "not supported" not in err
    os.write(2, b"after: not supported\n")  # descriptor 2 is back as it was
    assert "after: not supported" in capfd.readouterr().err


def test_write_webm_keeps_the_frame_rate_and_says_nothing(
    tmp_path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_webm(tmp_path / "clip.webm", _tiles(4), fps=24)
    assert "is not supported" not in capfd.readouterr().err
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little")
    capture.release()
    assert fps == pytest.approx(24) and fourcc in (b"VP90", b"VP80")
    with pytest.raises(ValueError, match="frame rate"):
        write_webm(tmp_path / "bad.webm", _tiles(1), fps=0)
