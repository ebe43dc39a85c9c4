"""Remote model downloads (``resolve_model_uri``) go to a folder removed at process exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from refsam.tracking.resolve import download_dir

PROGRAM = """
from refsam.tracking.resolve import download_dir
folder = download_dir()
(folder / "best.pt").write_bytes(b"weights")
print(folder)
"""


def test_download_folder_is_removed_when_the_process_exits() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, timeout=120
    )
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.name.startswith("refsam-model-")
    assert not folder.exists()


def test_each_download_gets_its_own_folder() -> None:
    first, second = download_dir(), download_dir()
    assert first != second and first.is_dir() and second.is_dir()
    assert not any(first.iterdir())
