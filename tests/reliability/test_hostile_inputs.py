"""Hostile inputs: code-running pickles, path-escaping ids and tar members, huge or deeply
nested JSON, decompression bombs, unsafe submission ids. Each is refused with a clear
error or quarantined with a reason; no payload runs and no path outside the input is read."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import refsam.data.sources.raw_files as raw_files
from refsam.cli import main
from refsam.data.index import read_index, read_quarantine, verify
from refsam.data.loader import iter_eval_videos
from refsam.data.shards import ingest
from refsam.data.sources import CATALOG, open_source
from refsam.data.sources.refcoco import load_refs
from refsam.errors import DataError, UserError
from refsam.eval.io import read_png
from refsam.eval.submission import SubmissionZip, member_name, zip_prediction_dir
from tests.reliability.helpers import copy_raw

# ---------------------------------------------------------------- what the process opens
_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event in ("open", "os.scandir", "os.listdir"):
        path = args[0] if args else None
        if isinstance(path, str | bytes | os.PathLike):
            _OPENED.append(os.path.abspath(os.fsdecode(path)))


sys.addaudithook(_audit)  # cannot be removed: it records only while _OPENED is a list


def _ingest_recording(dataset: str, split: str, raw: Path, out: Path) -> list[str]:
    global _OPENED
    _OPENED = []
    try:
        ingest(dataset, split, raw, out, shard_size=2, progress=False)
        return _OPENED
    finally:
        _OPENED = None


def _outside(opened: list[str], *allowed: Path) -> list[str]:
    roots = [str(p.resolve()) for p in (*allowed, CATALOG)]
    code = os.path.dirname(os.path.dirname(raw_files.__file__))
    return [
        p
        for p in opened
        if not any(p == r or p.startswith(r + os.sep) for r in roots)
        and not p.startswith((sys.prefix, sys.base_prefix, code, "/proc", "/dev", "/etc/"))
    ]


# ---------------------------------------------------------------- pickles
class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


class _Subprocess:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (subprocess.call, (["touch", str(self.marker)],))


def _good_refs(raw: Path) -> list[dict[str, Any]]:
    return load_refs(raw / "refcocog" / "refs(umd).p")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("payload", [_System, _Exec, _Subprocess])
def test_refs_pickle_payload_never_runs(
    demo_root: Path, tmp_path: Path, protocol: int, payload: type
) -> None:
    raw = copy_raw(demo_root, tmp_path, "refcocog")
    marker = tmp_path / "PWNED"
    refs = _good_refs(raw)
    refs[1]["sentences"][0]["sent"] = payload(marker)  # buried deep inside a valid file
    (raw / "refcocog" / "refs(umd).p").write_bytes(pickle.dumps(refs, protocol=protocol))
    with pytest.raises(DataError, match=r"refs\(umd\)\.p.*refusing to load global"):
        open_source("refcocog", "train", raw)
    assert main(["ingest", "--dataset", "refcocog", "--raw", str(raw), "--out", str(tmp_path)]) == 2
    assert not marker.exists(), "the pickle payload ran"
    assert not (tmp_path / "refcocog").exists()  # nothing written


@pytest.mark.parametrize(
    "value",
    [OrderedDict(a=1), datetime(2020, 1, 1), {1, 2}, frozenset({3}), (1, 2), b"bytes", 1j],
    ids=["OrderedDict", "datetime", "set", "frozenset", "tuple", "bytes", "complex"],
)
def test_refs_pickle_with_unexpected_types_is_refused(
    demo_root: Path, tmp_path: Path, value: Any
) -> None:
    raw = copy_raw(demo_root, tmp_path, "refcocog")
    refs = _good_refs(raw)
    refs[0]["extra"] = value
    (raw / "refcocog" / "refs(umd).p").write_bytes(pickle.dumps(refs, protocol=4))
    with pytest.raises(DataError, match=r"refs\(umd\)\.p"):
        open_source("refcocog", "train", raw)


@pytest.mark.timeout(60)
def test_refs_pickle_bombs_finish_quickly(demo_root: Path, tmp_path: Path) -> None:
    """Memo references make a 2**60-node tree in a few hundred bytes, or a list holding
    itself: the plain-type check visits each container once."""
    raw = copy_raw(demo_root, tmp_path, "refcocog")
    refs = _good_refs(raw)
    tree: list = []
    for _ in range(60):
        tree = [tree, tree]
    loop: list = []
    loop.append(loop)
    refs[0]["tree"], refs[0]["loop"] = tree, loop
    path = raw / "refcocog" / "refs(umd).p"
    path.write_bytes(pickle.dumps(refs, protocol=4))
    assert path.stat().st_size < 100_000
    loaded = load_refs(path)
    assert len(loaded) == len(refs)


# ---------------------------------------------------------------- tar shards
def _hostile_shard(shard: Path, add: tarfile.TarInfo, data: bytes = b"{}") -> None:
    """Rewrite ``shard`` with one more member and fix the manifest so that only the member
    check can notice."""
    buffer = io.BytesIO()
    with tarfile.open(shard) as src, tarfile.open(fileobj=buffer, mode="w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        add.size = len(data) if add.isreg() else 0
        dst.addfile(add, io.BytesIO(data) if add.isreg() else None)
    shard.write_bytes(buffer.getvalue())
    manifest_path = shard.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["shards"]:
        if entry["name"] == shard.name:
            entry["size"] = shard.stat().st_size
            entry["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    ("member", "says"),
    [
        (_member("../escape.json"), "path"),
        (_member("/abs/escape.json"), "path"),
        (_member("sub/dir.json"), "path"),
        (_member("..json"), "'..'"),
        (_member("link.json", tarfile.SYMTYPE, "/etc/passwd"), "symlink"),
        (_member("hard.json", tarfile.LNKTYPE, "../../etc/passwd"), "hard link"),
        (_member("dev.json", tarfile.CHRTYPE), "non-regular"),
    ],
    ids=["dotdot", "absolute", "subdir", "dots", "symlink", "hardlink", "device"],
)
def test_shard_with_unsafe_member_is_refused(
    demo_root: Path, tmp_path: Path, member: tarfile.TarInfo, says: str
) -> None:
    raw = copy_raw(demo_root, tmp_path, "refcocog")
    ingest("refcocog", "train", raw, tmp_path / "out", shard_size=4, progress=False)
    shard_dir = tmp_path / "out" / "refcocog" / "train"
    _hostile_shard(shard_dir / "shard-000001.tar", copy.copy(member))
    problems = [p for p in verify(shard_dir) if ": member " in p]
    assert len(problems) == 1
    assert problems[0].startswith("shard-000001.tar: member") and says in problems[0]
    with pytest.raises(DataError, match=rf"shard-000001\.tar: member .*{says}"):
        list(iter_eval_videos(shard_dir))
    assert main(["shards", "verify", str(shard_dir)]) == 1
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "out" / "abs").exists()


# ---------------------------------------------------------------- ids that are paths
def _frames_at(target: Path, like: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for jpg in like.glob("*.jpg"):
        shutil.copy(jpg, target / jpg.name)


def test_mevis_ids_and_frame_names_with_path_parts_are_quarantined(
    demo_root: Path, tmp_path: Path
) -> None:
    raw = copy_raw(demo_root, tmp_path, "mevis")
    meta_path = raw / "train" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    first = sorted(meta["videos"])[0]
    entry = meta["videos"][first]
    images = raw / "train" / "JPEGImages"
    # real frames placed where the hostile ids point, so an escape would "work"
    _frames_at(tmp_path / "evil", images / first)
    absolute = str(tmp_path / "evil")
    meta["videos"]["../../../evil"] = entry
    meta["videos"][absolute] = entry
    meta["videos"]["zz-escaping-frames"] = {
        **entry,
        "frames": [f"../../../../evil/{n}" for n in entry["frames"]],
    }
    meta_path.write_text(json.dumps(meta))
    out = tmp_path / "out"
    opened = _ingest_recording("mevis", "train", raw, out)
    shard_dir = out / "mevis" / "train"
    unsafe = {q["video"] for q in read_quarantine(shard_dir) if q["reason"] == "unsafe_path"}
    assert unsafe == {"../../../evil", absolute, "zz-escaping-frames"}
    assert {r["video"] for r in read_index(shard_dir).to_pylist()} == set(meta["videos"]) - unsafe
    assert _outside(opened, raw, out) == []
    assert not any(p.startswith(str(tmp_path / "evil")) for p in opened)


def test_refcoco_file_name_escaping_the_root_is_quarantined(
    demo_root: Path, tmp_path: Path
) -> None:
    raw = copy_raw(demo_root, tmp_path, "refcocog")
    inst_path = raw / "refcocog" / "instances.json"
    inst = json.loads(inst_path.read_text())
    victim = inst["images"][0]
    shutil.copy(raw / "train2014" / victim["file_name"], tmp_path / "outside.jpg")
    victim["file_name"] = "../../outside.jpg"
    inst["images"][1]["file_name"] = str(tmp_path / "outside.jpg")
    inst_path.write_text(json.dumps(inst))
    out = tmp_path / "out"
    opened = _ingest_recording("refcocog", "train", raw, out)
    items = read_quarantine(out / "refcocog" / "train")
    unsafe = {q["video"] for q in items if q["reason"] == "unsafe_path"}
    train_ids = set(open_source("refcocog", "train", raw).video_ids())
    expected = {str(i["id"]) for i in inst["images"][:2]} & train_ids
    assert unsafe == expected and expected
    assert str(tmp_path / "outside.jpg") not in opened
    assert _outside(opened, raw, out) == []


# ---------------------------------------------------------------- JSON
def test_deeply_nested_meta_json_is_a_clear_data_error(demo_root: Path, tmp_path: Path) -> None:
    raw = copy_raw(demo_root, tmp_path, "mevis")
    meta_path = raw / "train" / "meta_expressions.json"
    depth = 100_000
    meta_path.write_text('{"videos": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(DataError, match="nested too deeply") as caught:
        open_source("mevis", "train", raw)
    assert str(meta_path) in str(caught.value)


def test_meta_json_size_cap_is_configurable(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = copy_raw(demo_root, tmp_path, "mevis")
    monkeypatch.setattr(raw_files, "MAX_JSON_BYTES", 1000)
    with pytest.raises(
        DataError, match=r"more than the limit of 1000 bytes.*REFSAM_MAX_JSON_BYTES"
    ):
        open_source("mevis", "train", raw)
    monkeypatch.undo()
    env = {**os.environ, "REFSAM_MAX_JSON_BYTES": "1000"}
    cmd = [sys.executable, "-m", "refsam.cli", "ingest", "--dataset", "mevis", "--split", "train"]
    done = subprocess.run(
        [*cmd, "--raw", str(raw), "--out", str(tmp_path / "o")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "limit of 1000 bytes" in done.stderr
    assert open_source("mevis", "train", raw).video_ids()  # default limit: fine


# ---------------------------------------------------------------- decompression bombs
def _jpeg_declaring(data: bytes, height: int, width: int) -> bytes:
    """The same JPEG with its SOF header claiming another size."""
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = data.find(marker)
        if at >= 0:
            return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]
    raise AssertionError("no SOF marker")


def _png_declaring(height: int, width: int) -> bytes:
    """A palette PNG whose IHDR declares height×width, with a tiny (truncated) IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    palette = bytes(range(256)) * 3
    idat = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"PLTE", palette[:768])
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(60000, 60000), (9000, 9000)])
def test_frame_declaring_an_absurd_size_is_quarantined(
    demo_root: Path, tmp_path: Path, size: tuple[int, int]
) -> None:
    raw = copy_raw(demo_root, tmp_path, "ref-youtube-vos")
    video = sorted(p.name for p in (raw / "train" / "JPEGImages").iterdir())[0]
    frame = sorted((raw / "train" / "JPEGImages" / video).glob("*.jpg"))[0]
    frame.write_bytes(_jpeg_declaring(frame.read_bytes(), *size))
    ingest("ref-youtube-vos", "train", raw, tmp_path / "out", shard_size=2, progress=False)
    items = read_quarantine(tmp_path / "out" / "ref-youtube-vos" / "train")
    hit = [q for q in items if q["video"] == video]
    assert [q["reason"] for q in hit] == ["bad_frame"]
    assert "too large" in hit[0]["message"] or "declares" in hit[0]["message"]


@pytest.mark.parametrize("size", [(60000, 60000), (9000, 9000)])
def test_mask_png_declaring_an_absurd_size_is_refused(
    demo_root: Path, tmp_path: Path, size: tuple[int, int]
) -> None:
    raw = copy_raw(demo_root, tmp_path, "ref-youtube-vos")
    video = sorted(p.name for p in (raw / "train" / "Annotations").iterdir())[0]
    mask = sorted((raw / "train" / "Annotations" / video).glob("*.png"))[0]
    mask.write_bytes(_png_declaring(*size))
    ingest("ref-youtube-vos", "train", raw, tmp_path / "out", shard_size=2, progress=False)
    items = read_quarantine(tmp_path / "out" / "ref-youtube-vos" / "train")
    hit = [q for q in items if q["video"] == video]
    assert [q["reason"] for q in hit] == ["bad_mask"]
    with pytest.raises(UserError, match="too large|declares"):
        read_png(mask)


# ---------------------------------------------------------------- submissions
@pytest.mark.parametrize(
    "ids",
    [
        ("../escape", "0", "00000"),
        ("v", "../../escape", "00000"),
        ("v", "0", "../../../escape"),
        ("/abs", "0", "00000"),
        ("v", "0", "a/b"),
        ("v", "0", "a\\b"),
        ("..", "0", "00000"),
        ("", "0", "00000"),
        ("v", "0", "x\0y"),
    ],
)
def test_submission_ids_cannot_leave_the_zip(tmp_path: Path, ids: tuple[str, str, str]) -> None:
    for layout in ("ytvos", "mevis"):
        with pytest.raises(UserError, match="unsafe"):
            member_name(layout, *ids)
        out = tmp_path / layout / "sub.zip"
        with pytest.raises(UserError), SubmissionZip(out, layout=layout) as sub:
            sub.add("ok", "0", "00000", np.ones((2, 2), bool))
            sub.add(*ids, np.ones((2, 2), bool))
        assert sorted(p.name for p in out.parent.iterdir()) == []  # aborted: nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mevis", "ytvos"]


def test_zip_from_a_folder_with_odd_names_is_refused(tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    (pred / "v1" / "0").mkdir(parents=True)
    for name in ("00000.png", "..png"):
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(pred / "v1" / "0" / name, format="PNG")
    with pytest.raises(UserError, match="unsafe frame name"):
        zip_prediction_dir(pred, tmp_path / "sub.zip", layout="mevis")
    assert not (tmp_path / "sub.zip").exists()
