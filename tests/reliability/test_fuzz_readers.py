"""Property tests of every reader on corrupted copies of the tiny demo data.

Two kinds of corruption: byte level (truncation, overwritten, inserted or deleted bytes) of
meta JSON, mask_dict RLE, annotation PNGs, JPEG frames, text annotation files, the refs
pickle, instances.json and our shards; and structure level for JSON and the pickle (one
value anywhere in the tree replaced by a random JSON value or deleted). Each run reads the
whole split as ``refsam ingest`` would; allowed outcomes are a fatal
:class:`~refsam.errors.DataError` or a completed read (bad items quarantined). Any other
exception fails the test; pytest-timeout catches hangs.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import resource
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refsam.data.index import verify
from refsam.data.loader import iter_eval_videos
from refsam.data.plan import plan_ingest
from refsam.data.rle import decode_rle, encode_mask, normalize_rle
from refsam.data.shards import ingest, sample_members
from refsam.data.sources.raw_files import read_label_map
from refsam.errors import DataError, UserError
from refsam.eval.io import read_png
from refsam.eval.layouts import decode_coco_rle

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
TRIED: dict[str, int] = {}


@pytest.fixture(autouse=True, scope="module")
def memory_cap() -> Iterator[None]:
    """A memory bomb fails the test with MemoryError instead of the machine's OOM killer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        used = int(handle.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + (3 << 30), hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def raw(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("fuzz") / "raw"
    shutil.copytree(demo_root / "raw", target)
    return target


# ---------------------------------------------------------------- corruptions
@st.composite
def byte_corruption(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "delete"]))
    n = len(data)
    if kind == "truncate":
        return data[: draw(st.integers(0, max(0, n - 1)))]
    if kind == "overwrite":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, n - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    at = draw(st.integers(0, n))
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    return data[:at] + data[at + draw(st.integers(1, 64)) :]


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(tree: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _paths(value, (*prefix, index))


@st.composite
def structure_corruption(draw: st.DrawFn, tree: Any) -> Any:
    """Replace (or delete) one value anywhere in a JSON-like tree."""
    tree = json.loads(json.dumps(tree))
    paths = [p for p in _paths(tree) if p]
    path = draw(st.sampled_from(paths))
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return tree


# ---------------------------------------------------------------- the reading
def _read_split(dataset: str, split: str, root: Path, tmp: Path) -> None:
    """What ingest does before writing: plan (fatal errors), load and serialise every video."""
    try:
        plan = plan_ingest(dataset, split, root, tmp)
    except DataError:
        return
    for task in plan.shards:
        for video in task.videos:
            result = plan.source.load_video(video)
            if result.record is not None:
                sample_members(result.record)
            for item in result.quarantined:
                json.dumps(item.to_json())


def _with(path: Path, data: bytes, action: Callable[[], None]) -> None:
    original = path.read_bytes()
    try:
        path.write_bytes(data)
        action()
    finally:
        path.write_bytes(original)


def _count(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


JSON_TARGETS = [
    ("mevis", "train", "mevis/train/meta_expressions.json"),
    ("mevis", "train", "mevis/train/mask_dict.json"),
    ("mevis", "valid", "mevis/valid/meta_expressions.json"),
    ("ref-youtube-vos", "train", "ref-youtube-vos/meta_expressions/train/meta_expressions.json"),
    ("ref-youtube-vos", "train", "ref-youtube-vos/train/meta.json"),
    ("ref-youtube-vos", "valid", "ref-youtube-vos/meta_expressions/test/meta_expressions.json"),
    ("refcocog", "train", "coco/refcocog/instances.json"),
]
FILE_TARGETS = [
    *JSON_TARGETS,
    ("ref-davis17", "train", "ref-davis/davis_text_annotations/Davis17_annot1.txt"),
    ("ref-davis17", "train", "ref-davis/davis_text_annotations/Davis17_annot2_full_video.txt"),
    ("ref-davis17", "valid", "ref-davis/DAVIS/ImageSets/2017/val.txt"),
    ("refcocog", "train", "coco/refcocog/refs(umd).p"),
]


def _first(raw: Path, pattern: str) -> Path:
    return sorted(raw.glob(pattern))[0]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("dataset", "split", "rel"), FILE_TARGETS, ids=lambda v: str(v))
def test_byte_corrupted_metadata(
    raw: Path, tmp_path: Path, dataset: str, split: str, rel: str
) -> None:
    path = raw / rel
    root = raw / rel.split("/")[0]

    @FUZZ
    @given(data=byte_corruption(path.read_bytes()))
    def run(data: bytes) -> None:
        _count(f"bytes:{rel}")
        _with(path, data, lambda: _read_split(dataset, split, root, tmp_path))

    run()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("dataset", "split", "rel"), JSON_TARGETS, ids=lambda v: str(v))
def test_structure_corrupted_json(
    raw: Path, tmp_path: Path, dataset: str, split: str, rel: str
) -> None:
    path = raw / rel
    root = raw / rel.split("/")[0]

    @FUZZ
    @given(tree=structure_corruption(json.loads(path.read_text())))
    def run(tree: Any) -> None:
        _count(f"structure:{rel}")
        _with(path, json.dumps(tree).encode(), lambda: _read_split(dataset, split, root, tmp_path))

    run()


@pytest.mark.timeout(300)
def test_structure_corrupted_refs_pickle(raw: Path, tmp_path: Path) -> None:
    path = raw / "coco/refcocog/refs(umd).p"
    refs = pickle.loads(path.read_bytes())  # our own demo file: trusted

    @settings(FUZZ, max_examples=40)
    @given(tree=structure_corruption(refs))
    def run(tree: Any) -> None:
        _count("structure:refs(umd).p")
        data = pickle.dumps(tree, protocol=4)
        _with(path, data, lambda: _read_split("refcocog", "train", raw / "coco", tmp_path))

    run()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("dataset", "split", "pattern"),
    [
        ("ref-youtube-vos", "train", "ref-youtube-vos/train/Annotations/*/*.png"),
        ("ref-youtube-vos", "train", "ref-youtube-vos/train/JPEGImages/*/*.jpg"),
        ("ref-davis17", "valid", "ref-davis/DAVIS/Annotations_unsupervised/480p/*/*.png"),
        ("refcocog", "train", "coco/train2014/*.jpg"),
    ],
    ids=["ytvos-png", "ytvos-jpeg", "davis-png", "coco-jpeg"],
)
def test_byte_corrupted_images(
    raw: Path, tmp_path: Path, dataset: str, split: str, pattern: str
) -> None:
    path = _first(raw, pattern)
    root = raw / pattern.split("/")[0]

    @FUZZ
    @given(data=byte_corruption(path.read_bytes()))
    def run(data: bytes) -> None:
        _count(f"bytes:{pattern}")
        _with(path, data, lambda: _read_split(dataset, split, root, tmp_path))
        if path.suffix == ".png":  # the mask readers on their own
            _with(path, data, lambda: _png_readers(path))

    run()


def _png_readers(path: Path) -> None:
    with contextlib.suppress(ValueError):
        read_label_map(path)
    with contextlib.suppress(UserError):
        read_png(path)


@pytest.fixture(scope="module")
def shards(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fuzz-shards")
    ingest("mevis", "train", raw / "mevis", out, shard_size=1, progress=False)
    return out / "mevis" / "train"


@pytest.mark.timeout(300)
def test_byte_corrupted_shard(shards: Path) -> None:
    path = sorted(shards.glob("shard-*.tar"))[0]

    @FUZZ
    @given(data=byte_corruption(path.read_bytes()))
    def run(data: bytes) -> None:
        _count("bytes:shard tar")

        def read() -> None:
            assert verify(shards) or data == path.read_bytes()
            try:
                for video in iter_eval_videos(shards):
                    assert video.frame_names
            except DataError:
                pass

        _with(path, data, read)

    run()


# ---------------------------------------------------------------- RLE
RLE_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "size": st.one_of(JSON_VALUES, st.lists(st.integers(-5, 40), min_size=0, max_size=3)),
        "counts": st.one_of(
            JSON_VALUES,
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=127), max_size=40),
            st.lists(st.integers(-(2**33), 2**33), max_size=12),
            st.lists(st.integers(0, 30), max_size=12),
        ),
    },
)


@settings(FUZZ, max_examples=300)
@given(rle=st.one_of(RLE_LIKE, JSON_VALUES), h=st.integers(1, 12), w=st.integers(1, 12))
def test_rle_readers_accept_or_refuse_cleanly(rle: Any, h: int, w: int) -> None:
    _count("rle")
    try:
        normal = normalize_rle(rle, h, w)
    except ValueError:
        pass
    else:
        assert decode_rle(normal, h, w).shape == (h, w)
    if isinstance(rle, dict):
        with contextlib.suppress(UserError):
            decode_coco_rle(rle, "fuzz")


@settings(FUZZ, max_examples=100)
@given(
    mask=st.integers(1, 16).flatmap(
        lambda h: st.integers(1, 16).flatmap(
            lambda w: st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(
                lambda v: np.array(v, bool).reshape(h, w)
            )
        )
    )
)
def test_rle_round_trip(mask: np.ndarray) -> None:
    _count("rle round trip")
    rle = encode_mask(mask)
    assert np.array_equal(decode_rle(rle, *mask.shape), mask)
    assert normalize_rle(rle, *mask.shape) == rle


def test_report_fuzz_counts() -> None:
    """Prints the number of inputs tried (for docs/reliability.md); runs last here."""
    print(f"\nfuzz inputs tried: {sum(TRIED.values())}: {json.dumps(TRIED, sort_keys=True)}")
