"""A real ``mlflow ui`` on loopback and a headless Chromium driven by Playwright, for the
MLflow UI browser test.

The browser is Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it),
or the executable named by ``$REFSAM_CHROMIUM``. Playwright's own browser downloads are not
used (``playwright install`` needs a CDN). Without a browser the test fails under ``CI=true``
or when screenshots are asked for, and is skipped elsewhere, with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.servers import mlflow_process

CHROMIUM = os.environ.get("REFSAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# MLflow 3.17's UI opens the first visit in GenAI mode and, in a fresh browser, pops its
# assistant panel over a third of the page: the test starts as a user who closed it.
CLOSED_ASSISTANT = (
    "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
    "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
)


def missing_browser() -> str | None:
    """Why no browser can run here, or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"no Chromium at {CHROMIUM} (apt-get install chromium as root, "
            "or point $REFSAM_CHROMIUM at a Chromium/Chrome executable)"
        )
    return None


def require_browser(required: bool = False) -> None:
    """Fail under CI=true (or when ``required``), skip elsewhere, when the browser test
    cannot run."""
    reason = missing_browser()
    if reason is None:
        return
    if required or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(
            f"MLflow UI browser test: {reason}; required here (CI=true or --ui-screenshots; "
            ".ci/run installs chromium)"
        )
    pytest.skip(f"MLflow UI browser test: {reason}")


@contextmanager
def mlflow_ui(backend_uri: str, artifact_root: Path, log: Path) -> Iterator[str]:
    """``mlflow ui`` on a free loopback port, as the README starts it; yields its base URL."""
    options = ["--backend-store-uri", backend_uri, "--default-artifact-root", str(artifact_root)]
    with mlflow_process("ui", options, log) as base:
        yield base


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium (playwright ``Browser``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
