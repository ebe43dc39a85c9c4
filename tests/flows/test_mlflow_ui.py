"""The MLflow UI in a real browser: ``mlflow ui`` on loopback against the session's retrain
history (three smoke-config training runs with their nested evaluation runs, the model
``refsam`` with its ``champion`` alias), read by a headless Chromium (Playwright).

What a user comes for must be on the pages: the training runs and their evaluation runs,
J&F, the loss curve, and the champion in the registry. MLflow 3.17 opens an experiment in
GenAI mode in a fresh browser whatever the experiment's tags, so the pages are opened in
"Model training" mode (``?workflowType=machine_learning``, as the links the pipeline prints).

``pytest tests/flows/test_mlflow_ui.py --ui-screenshots docs/img`` also saves the README's
two screenshots (runs-compared.png, run-charts.png).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flows.history import History
from tests.flows.mlflow_ui import CLOSED_ASSISTANT, chromium, mlflow_ui, require_browser

# The browser check runs first: without a browser (and outside CI) nothing is built.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("browser_check")]

TRAINING_MODE = "workflowType=machine_learning"
WAIT_MS = 60_000  # the UI's first page load on a busy 2-core machine
VIEWPORT = {"width": 1280, "height": 1100}  # the screenshots: five charts, no scrolling
DAVIS_JF = "eval/ref-davis17/valid/J_and_F"


@pytest.fixture(scope="session")
def browser_check(request: pytest.FixtureRequest) -> None:
    require_browser(required=request.config.getoption("--ui-screenshots") is not None)


@pytest.fixture(scope="module")
def ui(history: History, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("mlflow-ui") / "mlflow-ui.log"
    artifacts = history.work / "mlruns" / "artifacts"
    with mlflow_ui(history.tracking.uri, artifacts, log) as base:
        yield base


@pytest.fixture(scope="module")
def browser(ui: str) -> Iterator[object]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser) -> Iterator[object]:  # noqa: ANN001
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(CLOSED_ASSISTANT)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path | None:
    folder = request.config.getoption("--ui-screenshots")
    if folder is None:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _runs(history: History) -> tuple[str, dict[str, list[str]]]:
    """The experiment id and {training run name: [its evaluation run names]}, from the store."""
    client = history.client()
    experiment = history.runs[0].train.mlflow_experiment_id
    runs = client.search_runs([experiment])
    names = {r.info.run_id: r.info.run_name for r in runs}
    training: dict[str, list[str]] = {}
    for run in runs:
        if "mlflow.parentRunId" not in run.data.tags:
            training.setdefault(run.info.run_name, [])
    for run in runs:
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:
            training[names[parent]].append(run.info.run_name)
    return experiment, training


def test_experiment_page_lists_training_runs_with_nested_evals_and_compares_them(
    history: History, ui: str, page, screenshots: Path | None
) -> None:
    from playwright.sync_api import expect

    experiment, training = _runs(history)
    assert len(training) == 3 and sum(map(len, training.values())) == 4  # the history's shape
    page.goto(f"{ui}/#/experiments/{experiment}/runs?{TRAINING_MODE}")
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    expect(page.get_by_role("link", name="Model registry")).to_be_visible()
    for name, evals in training.items():
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))
        expect(row).to_have_count(1)
        for evaluation in evals:  # nested: hidden until the training run is expanded
            expect(page.get_by_role("link", name=evaluation, exact=True)).to_have_count(0)
        row.locator("button[data-component-id*='runnamecellrenderer']").click()
        for evaluation in evals:
            expect(page.get_by_role("link", name=evaluation, exact=True)).to_be_visible()

    page.locator("label", has=page.locator("input[value=CHART]")).click()  # compare as charts
    search = page.get_by_placeholder("Search metric charts")
    for metric in ("train/loss", DAVIS_JF):  # one at a time: cards off-screen render lazily
        search.fill(metric)
        chart = _chart(page, metric)
        for name in training:  # one trace per training run, named in the legend
            expect(chart.get_by_text(f"{name} ({metric})", exact=True)).to_have_count(1)
        expect(chart.locator("g.scatterlayer g.trace")).not_to_have_count(0)  # drawn
        if metric == "train/loss":
            expect(chart.locator("path.js-line")).not_to_have_count(0)
    if screenshots is not None:
        search.fill(f"train/loss|{DAVIS_JF}")
        _scroll_to_top(_chart(page, DAVIS_JF))
        page.screenshot(path=screenshots / "runs-compared.png")


def test_run_page_shows_j_and_f_evaluations_loss_curve_and_champion(
    history: History, ui: str, page, screenshots: Path | None
) -> None:
    from playwright.sync_api import expect

    first = history.runs[0]
    experiment, training = _runs(history)
    run = history.client().get_run(first.train.mlflow_run_id)
    printed = first.train.mlflow_url  # the link the pipeline prints, opened on this server
    assert printed.endswith(f"/#/experiments/{experiment}/runs/{run.info.run_id}?{TRAINING_MODE}")
    page.goto(ui + printed[printed.index("/#/") :])
    expect(page.get_by_role("link", name="Model registry")).to_be_visible()  # training mode

    expect(page.get_by_role("heading", name=run.info.run_name)).to_be_visible()
    jf = run.data.metrics[DAVIS_JF]
    jf_row = page.get_by_role("row").filter(has=page.get_by_text(DAVIS_JF, exact=True))
    expect(jf_row).to_contain_text(repr(jf))
    for evaluation in training[run.info.run_name]:
        expect(page.get_by_role("link", name=evaluation, exact=True)).to_be_visible()
    version = first.decision.version  # "Registered models: refsam v1", linked to the version
    model_link = page.locator(f"a[href$='#/models/refsam/versions/{version}']")
    expect(model_link.first).to_have_text(re.compile(rf"refsam\s*v{version}"))
    # the checkpoint as an MLflow 3 logged model, registered as that version
    expect(page.get_by_text("Logged models (1)", exact=True)).to_be_visible()
    logged = page.locator("[role=row][row-id^='m-']")  # one row, split in the grid's panes
    expect(logged).not_to_have_count(0)
    assert logged.evaluate_all("rows => new Set(rows.map(r => r.getAttribute('row-id'))).size") == 1
    expect(logged.filter(has_text="Ready")).not_to_have_count(0)
    expect(logged.locator(f"a[href$='#/models/refsam/versions/{version}']")).not_to_have_count(0)

    page.get_by_role("tab", name="Model metrics").click()
    page.get_by_placeholder("Search metric charts").fill("train/")
    loss = _chart(page, "train/loss")
    expect(loss.locator("g.scatterlayer path.js-line")).not_to_have_count(0)  # a drawn curve
    for card in page.get_by_test_id("experiment-view-compare-runs-card").all():
        expect(card.locator("g.scatterlayer g.trace")).not_to_have_count(0)
    if screenshots is not None:
        _scroll_to_top(loss)
        page.screenshot(path=screenshots / "run-charts.png")

    page.get_by_role("link", name="Model registry").click()
    registered = page.get_by_role("row").filter(has=page.get_by_role("link", name="refsam"))
    expect(registered).to_contain_text("@ champion")
    expect(registered).to_contain_text(f"Version {first.decision.version}")


def _chart(page, metric: str):  # noqa: ANN001, ANN202
    """The one chart card whose legend names ``metric``, scrolled into view (cards render
    lazily)."""
    from playwright.sync_api import expect

    cards = page.get_by_test_id("experiment-view-compare-runs-card")
    card = cards.filter(has=page.get_by_text(f"({metric})", exact=False))
    expect(card).to_have_count(1)
    card.scroll_into_view_if_needed()
    return card


def _scroll_to_top(card) -> None:  # noqa: ANN001
    """Scrolls the chart cards' pane back to its top (for the screenshots)."""
    card.evaluate(
        """card => {
            let pane = card.parentElement;
            while (pane && pane.scrollTop === 0) pane = pane.parentElement;
            if (pane) pane.scrollTop = 0;
        }"""
    )
