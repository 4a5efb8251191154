"""The report in a real browser: headless Chromium, networking off, opened from disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.report.fixtures import RUN_IDS, assert_report, browser_available, synthetic_dataset
from tcplimits.report import browser, render

REPORT = render.REPORT_SOURCE

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(browser_available() is not None,
                                 reason=str(browser_available()))]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    render.render_report(synthetic_dataset(tmp / "dataset"), tmp / "report", REPORT)
    return tmp / "report"


def test_report_opens_offline_without_errors_and_draws_every_chart(report_dir):
    found = assert_report(report_dir, RUN_IDS, expect_charts=5)
    assert {c["name"] for c in found["charts"]} == {
        "connections_vs_range", "outcomes", "observed_vs_predicted", "latency_vs_fill",
        "server_vs_clients"}
    assert found["requests"] == [(report_dir / "index.html").resolve().as_uri()]


def test_the_check_would_notice_a_cdn(tmp_path):
    # The same check on a page that wants a script from a CDN: the request is seen and fails.
    page = tmp_path / "cdn.html"
    page.write_text('<!DOCTYPE html><html><head><script src="https://cdn.jsdelivr.net/npm/'
                    'vega@5"></script></head><body><div class="tcpl-chart"></div></body></html>')
    found = browser.browser_check(page)
    assert any(u.startswith("https://cdn.jsdelivr.net") for u in found["requests"])
    assert any(e["level"] == "SEVERE" for e in found["console"])
    assert found["charts"][0]["drawn"] == 0
