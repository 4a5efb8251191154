"""Charts: valid Vega-Lite from small frames, drawn offline as inline SVG."""

from __future__ import annotations

import json

import altair as alt
import polars as pl
import pytest

from tests.report.fixtures import assert_tooltips, synthetic_dataset
from tcplimits.report import charts, embed, render
from tcplimits import model


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return render.load_dataset(synthetic_dataset(tmp_path_factory.mktemp("ds")))


def _comparisons(ds):
    return render.comparison_frame(
        model.compare_runs(ds["runs"].to_dicts(), ds["clients"].to_dicts()))


BUILDERS = {
    "connections_vs_range": lambda ds: charts.connections_vs_range(ds["clients"]),
    "outcomes": lambda ds: charts.outcomes(ds["clients"]),
    "observed_vs_predicted": lambda ds: charts.observed_vs_predicted(_comparisons(ds)),
    "latency_vs_fill": lambda ds: charts.latency_vs_fill(ds["series"], ds["runs"]),
    "server_vs_clients": lambda ds: charts.server_vs_clients(ds["runs"]),
    "by_host": lambda ds: charts.by_host(_comparisons(ds).with_columns(host=pl.lit("h1"))),
    "held_against_limits": lambda ds: charts.held_against_limits(
        ds["runs"].with_columns(network=pl.lit("bridge")),
        [{"limit": "fs.file-max", "connections": 100_000}]),
}


def _empty(ds):
    return {name: df.clear() for name, df in ds.items()}


@pytest.mark.parametrize("name", BUILDERS)
def test_chart_is_valid_vega_lite(ds, name):
    chart = BUILDERS[name](ds)
    assert isinstance(chart, alt.TopLevelMixin)
    spec = chart.to_dict()  # validates against the Vega-Lite schema
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    assert spec["usermeta"] == {"tcplimits": {"chart": name}}


@pytest.mark.parametrize("name", BUILDERS)
def test_chart_carries_its_tooltip(ds, name):
    assert_tooltips(BUILDERS[name](ds).to_dict())


@pytest.mark.parametrize("name", BUILDERS)
def test_chart_draws_offline_with_its_spec_beside(ds, name):
    page = charts.to_html(BUILDERS[name](ds))
    assert page.startswith(f'<div class="tcpl-chart" data-chart="{name}"><svg')
    assert page.count("<svg") == 1 and page.count("<script") == 1
    assert '<script type="application/json" class="tcpl-spec">' in page
    assert render.external_references(page) == []
    spec = page.split('class="tcpl-spec">')[1].split("</script>")[0]
    assert "<" not in spec and json.loads(spec) == json.loads(json.dumps(
        BUILDERS[name](ds).to_dict(), default=str))


def test_spec_json_cannot_end_its_script():
    page = embed.spec_to_html({"mark": "point", "data": {"values": [{"a": "</script><b>"}]},
                               "encoding": {"x": {"field": "a", "type": "nominal"}}})
    assert "</script><b>" not in page and page.count("</script>") == 1


def test_page_script_is_added_once_and_only_to_pages_with_charts():
    page = f'<html><body><div class="{embed.CHART_CLASS}"></div></body></html>'
    once = embed.add_page_script(page)
    assert once.count(f'id="{embed.SCRIPT_ID}"') == 1 and once.endswith("</body></html>")
    assert embed.add_page_script(once) == once
    assert embed.add_page_script("<html><body></body></html>") == "<html><body></body></html>"
    assert "vegaEmbed" in once and render.external_references(once) == []


def test_continuous_axes_zoom_and_the_latency_legend_selects(ds):
    spec = BUILDERS["latency_vs_fill"](ds).to_dict()
    params = spec.get("params", []) + [p for unit in spec["layer"] for p in unit.get("params", [])]
    assert {p["select"]["type"] if isinstance(p["select"], dict) else p["select"]
            for p in params} == {"point", "interval"}
    assert any(p.get("bind") == "legend" for p in params)
    assert any(p.get("bind") == "scales" for p in params)


@pytest.mark.parametrize("name", BUILDERS)
def test_chart_of_empty_frames_still_validates(ds, name):
    chart = BUILDERS[name](_empty(ds))
    chart.to_dict()
    assert "<svg" in charts.to_html(chart)


def test_port_count_derived_from_range_when_absent(ds):
    chart = charts.connections_vs_range(ds["clients"].drop("port_count"))
    values = chart.to_dict()["datasets"]
    assert any(row.get("port_count") == 64512 for rows in values.values() for row in rows)


def _lookup(spec):
    data = spec["layer"][0]["transform"][0]["from"]["data"]
    return data.get("values") or spec["datasets"][data["name"]]


def _latency_rows(spec):
    """The latency chart's samples, each joined with its point (the spec's lookup table)."""
    samples = next(rows for rows in spec["datasets"].values() if rows and {"fill", "k"} <= set(rows[0]))
    points = {p["k"]: p for p in _lookup(spec)}
    return [{**points[r["k"]], **r} for r in samples]


def test_latency_only_for_port_bound_runs(ds):
    rows = _latency_rows(charts.latency_vs_fill(ds["series"], ds["runs"]).to_dict())
    assert {r["run_id"] for r in rows} == {"seed-default", "seed-wide-range", "range-1000",
                                           "shared-pool", "short-timeout"}
    assert all(0 <= r["fill"] <= 1 for r in rows)


def test_latency_names_its_lines_by_point_and_carries_each_point_once(ds):
    names = {"seed-default": "the <seed>"}
    spec = charts.latency_vs_fill(ds["series"], ds["runs"], names).to_dict()
    lookup = _lookup(spec)
    assert len({p["run_id"] for p in lookup}) == len(lookup)
    assert {p["point"] for p in lookup if p["run_id"] == "seed-default"} == {"the <seed>"}
    assert spec["layer"][0]["encoding"]["color"]["field"] == "point"


def test_every_errno_the_model_can_predict_has_its_own_colour():
    from tcplimits.model import churn, fourtuple, knobs

    predicted = ({e for e in model.ERRNO_OF_LIMIT.values() if e}
                 | set(fourtuple.POOL_ERRNO.values())
                 | {k.errno for k in knobs.KNOBS if k.errno} | {churn.DURATION})
    colours = {e: charts.ERRNO_COLORS.get(e) for e in predicted}
    assert None not in colours.values(), colours
    assert len(set(colours.values())) == len(colours)
    assert charts.ERRNO_COLORS["none"] not in colours.values()


def test_a_chart_of_differences_only_where_a_point_differs(ds):
    comparisons = _comparisons(ds)
    exact = comparisons.with_columns(observed=pl.col("predicted"))
    assert not charts.differences(exact)
    assert "hconcat" not in charts.observed_vs_predicted(exact).to_dict()
    assert charts.differences(comparisons)
    assert "hconcat" in charts.observed_vs_predicted(comparisons).to_dict()


def test_points_are_named_by_label_with_the_run_id_in_the_tooltip(ds):
    names = {r: f"label of {r}" for r in ds["runs"]["run_id"]}
    spec = charts.outcomes(ds["clients"], names).to_dict()
    assert spec["encoding"]["y"]["field"] == "point"
    tips = [t["field"] for t in spec["encoding"]["tooltip"]]
    assert tips[0] == "point" and tips[-1] == "run_id"
    rows = next(iter(spec["datasets"].values()))
    assert all(r["point"] == names[r["run_id"]] for r in rows)


def test_facets_wrap_with_short_titles(ds):
    spec = charts.connections_vs_range(ds["clients"]).to_dict()
    assert "facet" in spec and "row" not in spec["facet"] and spec["columns"] >= 1
    panels = {r["layout"] for rows in spec["datasets"].values() for r in rows if "layout" in r}
    assert "1 client, 1 proc" in panels and all(len(p) < 24 for p in panels)


def test_errno_colours_are_fixed_and_unknown_names_grey():
    df = pl.DataFrame({"run_id": ["a", "a"], "error": ["EMFILE", "EWEIRD"],
                       "connections": [1, 2]})
    scale = charts.outcomes(df).to_dict()["encoding"]["color"]["scale"]
    assert scale["domain"] == ["EMFILE", "EWEIRD"]
    assert scale["range"] == [charts.ERRNO_COLORS["EMFILE"], "#999999"]


def test_svg_ids_are_made_unique():
    svg = ('<svg><defs><clipPath id="clip1"><rect/></clipPath></defs>'
           '<g clip-path="url(#clip1)"><use href="#clip1"/></g></svg>')
    out = embed._unique_ids(svg)
    prefix = out.split('id="')[1].split("clip1")[0]
    assert prefix and f'url(#{prefix}clip1)' in out and f'href="#{prefix}clip1"' in out


def test_offline_renderer_displays_inline_svg(ds):
    charts.use_offline_renderer()
    assert alt.renderers.active == charts.RENDERER
    bundle = BUILDERS["outcomes"](ds)._repr_mimebundle_()
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    assert list(bundle) == ["text/html"] and "<svg" in bundle["text/html"]


def test_latency_draws_noisy_runs_dashed(ds):
    runs = ds["runs"].with_columns(noisy=pl.col("run_id") == "range-1000")
    spec = charts.latency_vs_fill(ds["series"], runs).to_dict()
    hosts = {r["run_id"]: r["host"] for r in _latency_rows(spec)}
    assert hosts.pop("range-1000") == charts.NOISY
    assert set(hosts.values()) == {charts.QUIET}
    dash = spec["layer"][0]["encoding"]["strokeDash"]
    assert dash["field"] == "host" and dash["scale"]["domain"] == [charts.QUIET, charts.NOISY]
