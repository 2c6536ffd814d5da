"""Browser smoke tests: JupyterLab on 127.0.0.1 in headless Chromium (Debian's, driven by
Playwright). The triage notebook runs; an investigation notebook's form picks the lab
scenario, runs, and shows the verdict; an HTML report renders its charts with no network.
Screenshots are kept as artifacts in artifacts/browser/."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlab.report import batch
from netlab.report import run as runner
from tests.browser.jupyter import CHROMIUM, CHROMIUM_ARGS, have_browser, jupyterlab
from tests.conftest import need
from tests.kernel.labtools import leftovers, scenario

pytestmark = [pytest.mark.kernel, pytest.mark.browser]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "file://", "about:")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    need(os.geteuid() == 0, "needs root (the lab)")
    need(have_browser(), "Debian's chromium and the playwright package are needed")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _page(browser: object, outside: list[str]):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(LOCAL) else None)
    return page


def _run_all(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_selector(".jp-Notebook", timeout=60000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60000)
    time.sleep(2)  # the kernel connects; a Run All sent before that is lost
    page.click("li.lm-MenuBar-item:has-text('Kernel')")
    page.click("text=Restart Kernel and Run All Cells")
    page.click(".jp-Dialog button:has-text('Restart')")


def test_triage_and_investigation_form(
    browser: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy: JupyterLab saves what it runs, and the repository's notebooks stay clean.
    notebooks = tmp_path / "notebooks"
    shutil.copytree(
        runner.notebooks_dir(), notebooks, ignore=shutil.ignore_patterns("prepared", ".ipynb_checkpoints")
    )
    monkeypatch.setenv("NETLAB_NOTEBOOKS", str(notebooks))
    outside: list[str] = []
    with scenario("stale-cgroup-prog"), jupyterlab(notebooks, tmp_path) as url:
        page = _page(browser, outside)
        page.goto(url.format(path="triage.ipynb"))
        _run_all(page)
        page.wait_for_selector("text=Open next", timeout=180000)
        page.screenshot(path=str(ARTIFACTS / "triage.png"), full_page=True)

        page.goto(url.format(path="cgroup-progs.ipynb"))
        _run_all(page)
        page.wait_for_selector("text=Run investigation", timeout=120000)
        form = page.locator(".widget-vbox").filter(has_text="Run investigation").first
        form.locator("select").first.select_option("stale-cgroup-prog")
        form.locator("button:has-text('Run investigation')").click()
        page.wait_for_selector(".netlab-verdict-text", timeout=120000)
        verdict = page.locator(".netlab-verdict-text").first.inner_text()
        page.screenshot(path=str(ARTIFACTS / "cgroup-progs-form.png"), full_page=True)
        page.close()
    assert "stale-cgroup-program" in verdict
    assert outside == [], f"requests left 127.0.0.1: {outside[:5]}"
    assert leftovers() == []


def test_html_report_renders_charts_offline(browser: object, tmp_path: Path) -> None:
    with scenario("conntrack-reject"):
        result = runner.run("packet-drops", lab="conntrack-reject", out=tmp_path)
    assert result.html is not None
    outside: list[str] = []
    page = _page(browser, outside)
    page.goto(result.html.as_uri())
    page.wait_for_selector(".netlab-verdict", timeout=30000)
    page.wait_for_selector(".plotly .main-svg", timeout=30000)
    charts = page.locator(".plotly .main-svg").count()
    page.screenshot(path=str(ARTIFACTS / "packet-drops-report.png"), full_page=True)
    page.close()
    assert charts >= 2
    assert outside == [], f"the report fetched: {outside[:5]}"
    assert result.html.stat().st_size < 1_500_000  # plotly.js is the shared copy beside it


def test_index_page_shows_verdicts_in_colour_and_sorts(browser: object, tmp_path: Path) -> None:
    """The index of a batch as a reader meets it: findings first, coloured, the summary's
    first sentence, and a click on a header sorts by that column."""
    with scenario("stale-cgroup-prog"):
        result = runner.run("cgroup-progs", lab="stale-cgroup-prog", out=tmp_path)
    assert result.html is not None
    rows = [
        {"target": "node-b", "verdict": "healthy", "summary": "Every connect4 program agrees.", "report": None,
         "error": None},
        {"target": "node-a", "verdict": result.findings.verdict, "summary": result.findings.summary,
         "report": result.html.name, "error": None},
        {"target": "node-c", "verdict": None, "summary": "", "report": None, "error": "cannot reach the node"},
    ]  # fmt: skip
    index = batch.write_index("cgroup-progs", rows, tmp_path)
    outside: list[str] = []
    page = _page(browser, outside)
    page.goto(index.as_uri())
    targets = page.locator("tbody td:first-child").all_inner_texts()
    colour = page.locator("tbody td.verdict").first.evaluate("e => getComputedStyle(e).color")
    page.screenshot(path=str(ARTIFACTS / "index.png"), full_page=True)
    page.locator("th[data-col='0']").click()
    sorted_targets = page.locator("tbody td:first-child").all_inner_texts()
    page.close()
    assert targets == ["node-a", "node-c", "node-b"]  # the finding, the error, then healthy
    assert colour == "rgb(207, 34, 46)"
    assert sorted_targets == ["node-a", "node-b", "node-c"]
    assert outside == []
