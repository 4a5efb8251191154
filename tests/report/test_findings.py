"""The face report.qmd calls (tcplimits.report.findings): every computing cell is one
findings call, and each name it calls is there. What each call shows is tested with its
section, under tests/report/sections/."""

from __future__ import annotations

import re

from tcplimits.report import charts, findings, render
from tcplimits.results import dataset


def test_the_report_calls_only_findings_and_charts(data_dir):
    """The .qmd holds prose and calls: each computing cell is one findings call."""
    source = render.REPORT_SOURCE.read_text()
    cells = re.findall(r"```\{python\}\n(.*?)```", source, flags=re.S)
    calls = [re.sub(r"^(#\|.*\n)+", "", c).strip() for c in cells
             if not c.startswith("#| include: false") and "#| echo: true" not in c]
    # one call per cell; a section's figure cell shows its charts, the cell beside it the rest
    assert calls and all(re.fullmatch(r"findings\.\w+\((d|d, DATA)?\)(\.(words|figure)\(\))?", c)
                         for c in calls), calls
    for call in calls:
        assert hasattr(findings, call.split(".")[1].split("(")[0])
    assert dataset.TABLE_NAMES == ("runs", "clients", "server", "series", "destinations", "churn",
                                   "realserver")
    assert charts.per_client  # the section functions draw with charts


def test_the_face_holds_only_what_the_report_and_the_cli_call():
    source = render.REPORT_SOURCE.read_text()
    called = set(re.findall(r"\bfindings\.(\w+)\(", source))
    assert called | {"Data", "sweep_summary"} == set(findings.__all__)
    assert all(getattr(findings, name) for name in findings.__all__)
