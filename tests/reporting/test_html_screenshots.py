"""The HTML report in a real browser (Debian chromium, headless, through Playwright):
screenshots written to test-artifacts/ for a person to look at, and the banner checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsight.cli import app

SAMPLES = Path(__file__).parents[2] / "src/medsight/samples/cxr"
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "screenshots"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian chromium is not installed; scripts/test installs it")
    return path


@pytest.mark.timeout(300)
def test_report_screenshots_show_the_banner_priority_and_findings(tmp_path):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            str(SAMPLES),
            "--task",
            "cxr-pneumonia",
            "--out",
            str(out),
            "--outputs",
            "sr,sc,json,html",
        ],
    )
    assert result.exit_code == 0, result.output
    pages = sorted(out.glob("*/report.html"))
    assert len(pages) == 3
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        for number, report in enumerate(pages, start=1):
            page.goto(report.as_uri())
            banner = page.locator(".banner")
            assert banner.is_visible()
            assert "Research use only, not for diagnostic use." in banner.inner_text()
            assert page.locator(".priority").inner_text().strip() in {
                "URGENT",
                "STAT",
                "NEEDS_REVIEW",
                "ROUTINE",
                "NO_AI_FINDING",
            }
            image = page.locator("img.key").first
            assert image.evaluate("i => i.complete && i.naturalWidth > 0")  # overlay loads
            assert page.locator("table").first.is_visible()  # findings table
            page.screenshot(path=str(ARTIFACTS / f"report-{number}.png"), full_page=True)
        browser.close()
    assert len(list(ARTIFACTS.glob("report-*.png"))) >= 3
