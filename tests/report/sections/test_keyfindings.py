"""Key findings under the title, and the sections' use of point names."""

from __future__ import annotations

import polars as pl

from tcplimits.report import render
from tcplimits.report.data import agreement_counts, most_accepted
from tcplimits.report.sections import fourtuple, hold, keyfindings, tuning


def test_key_findings_state_the_sections_numbers_and_link_each_line(d):
    lines = keyfindings.lines(d)
    a = agreement_counts(d.comparisons)
    best = most_accepted(d.runs)
    text = "\n".join(lines)
    assert f"**{d.every.height} points** ran" in text
    assert f"**The model predicted {a.within} of {a.points} points**" in text
    assert f"**The most one server held: {best['server_accepted']:,} connections**" in text
    assert all("@sec-" in line for line in lines)  # each line links to its evidence
    box = keyfindings.key_findings(d).text()
    assert box.startswith('<div class="tcpl-box key-findings">') and box.endswith("</div>")


def test_key_findings_of_an_empty_dataset_say_how_to_fill_it(empty):
    assert "snakemake --cores 4" in keyfindings.lines(empty)[0]


def test_every_point_has_a_unique_name_and_tables_keep_the_run_id_last(d):
    assert len(set(d.labels.values())) == len(d.labels) == d.every.height
    rows = hold.comparison_rows(d.comparisons, d.labels)
    assert rows.columns[0] == "point" and rows.columns[-1] == "run id"
    assert rows["point"].to_list() == [d.name(r) for r in rows["run id"]]


def test_section_4_leaves_points_of_several_pools_to_section_9():
    runs = pl.DataFrame({"run_id": ["a", "b", "c"], "server_ports": [1, 2, 1],
                         "server_addrs": [1, 1, 1], "client_addrs": [1, 1, 2],
                         "bind_mode": ["connect"] * 3})
    assert fourtuple.beyond_one_pool(runs) == ["b", "c"]


def test_a_seed_row_without_points_names_the_config_that_runs_one(d, monkeypatch, tmp_path):
    (tmp_path / "big.yaml").write_text("points:\n  - {port_range: 30000-30999, clients: 1}\n"
                                       "  - {port_range: 30000-30999, clients: 2}\n")
    (tmp_path / "small.yaml").write_text("points:\n  - {port_range: 30000-30999}\n")
    monkeypatch.setenv(render.CONFIGS_ENV, str(tmp_path))
    assert hold.configs_running("30000-30999") == ["config/small.yaml", "config/big.yaml"]
    row, ids = hold.seed_row(d, "x", "30000-30999", "blog")
    assert ids == [] and row["details"] == (
        "not in this run set; snakemake --cores 4 --configfile config/small.yaml runs it")


def test_the_tuning_section_counts_the_points_each_term_bound(d):
    text = tuning.tuning(d).text()
    a = agreement_counts(d.comparisons)
    ports = next(line for line in text.splitlines() if "ip\\_local\\_port\\_range" in line)
    assert f"| {a.limits['ports']} |" in ports and "@sec-ports" in ports
