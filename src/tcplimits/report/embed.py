"""The report's charts on the page: interactive where scripts run, still offline.

Each chart is one ``<div class="tcpl-chart">`` holding two things: the chart as inline SVG,
drawn by vl-convert (what a reader sees where scripts do not run, and in print), and its
Vega-Lite spec as JSON. One script, inlined once per page (``page_script``: the Vega,
Vega-Lite and vega-embed bundle vl-convert ships, then a few lines of ours), redraws every
chart from its spec with vega-embed: tooltips, zoom and pan, legend selections. Nothing is
fetched: the data is inside each spec and the libraries inside the page.

``use_offline_renderer()`` makes Altair display charts this way in a notebook kernel (Quarto
and the nbconvert path alike); ``render`` adds ``page_script`` to the finished page.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import re

import altair as alt

RENDERER = "tcplimits-svg"
CHART_CLASS = "tcpl-chart"
SCRIPT_ID = "tcplimits-vega"
# Applied at drawing time, so the chart objects stay composable.
CONFIG = {
    "font": "Helvetica, Arial, sans-serif",
    "axis": {"labelFontSize": 11, "titleFontSize": 12, "titleFontWeight": "normal",
             "gridColor": "#e6e6e6"},
    "legend": {"labelFontSize": 11, "titleFontSize": 12, "titleFontWeight": "normal"},
    "header": {"labelFontSize": 12, "titleFontSize": 12, "titleFontWeight": "normal"},
    "title": {"fontSize": 13, "fontWeight": "normal", "anchor": "start"},
    "view": {"stroke": "#ddd"},
}

# Ours, after the bundle: draw each chart from its spec into a new element, and drop the SVG
# only once that succeeded (a failure keeps the static chart and says so in the console).
_DRAW = """
const tcplimitsConfig = %(config)s;
async function tcplimitsDraw(div) {
  const spec = JSON.parse(div.querySelector('script.tcpl-spec').textContent);
  const live = document.createElement('div');
  live.className = 'tcpl-live';
  div.appendChild(live);
  try {
    await vegaEmbed(live, spec, {actions: false, renderer: 'svg', config: tcplimitsConfig});
  } catch (error) {
    live.remove();
    console.error('tcplimits: chart ' + div.dataset.chart + ' kept static:', error);
    return;
  }
  div.querySelectorAll(':scope > svg').forEach(svg => svg.remove());
  div.dataset.embedded = 'yes';
}
function tcplimitsDrawAll() {
  document.querySelectorAll('.%(cls)s:not([data-embedded])').forEach(tcplimitsDraw);
}
if (document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', tcplimitsDrawAll);
} else {
  tcplimitsDrawAll();
}
"""


def vl_version() -> str:
    # vl-convert names Vega-Lite versions like "v6_4"; Altair's schema is "v6.4.1".
    return "_".join(alt.SCHEMA_VERSION.split(".")[:2])


@functools.cache
def page_script() -> str:
    """``<script id="tcplimits-vega">``: vega, vega-lite and vega-embed (as vl-convert ships
    them, for Altair's Vega-Lite version) and the lines that draw every chart."""
    import vl_convert as vlc

    bundle = vlc.javascript_bundle(vl_version=vl_version())
    ours = _DRAW % {"config": _json(CONFIG), "cls": CHART_CLASS}
    script = bundle + "\n" + ours
    if re.search(r"</script|<!--", script, re.I):  # would end the element early
        raise ValueError("the chart bundle cannot be inlined in a <script> element")
    return f'<script id="{SCRIPT_ID}">\n{script}\n</script>'


def add_page_script(page: str) -> str:
    """The page with ``page_script`` once before ``</body>`` when it has a chart and lacks
    it; any other page unchanged."""
    if f'class="{CHART_CLASS}"' not in page or f'id="{SCRIPT_ID}"' in page:
        return page
    at = page.rfind("</body>")
    at = len(page) if at < 0 else at
    return page[:at] + page_script() + "\n" + page[at:]


def without_page_script(page: str) -> str:
    """The page without the bundle: a library's own text, which the static check of
    references skips (it mentions `<img src=`; the browser check sees what it does)."""
    return re.sub(rf'<script id="{SCRIPT_ID}">.*?</script>', "", page, flags=re.S)


def _json(value) -> str:
    """JSON safe inside a <script> element (no "</script", "<!--" or entity surprises)."""
    return (json.dumps(value, separators=(",", ":"), default=str)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _unique_ids(svg: str) -> str:
    """Prefix the SVG's ids (clip paths, gradients) so several charts inline in one page
    never resolve each other's url(#id)."""
    prefix = "c" + hashlib.sha1(svg.encode()).hexdigest()[:8] + "-"
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m[1]}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m[1]})", svg)
    return re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m[1]}"', svg)


def spec_to_html(spec: dict) -> str:
    """A Vega-Lite spec -> ``<div class="tcpl-chart">`` holding the chart as inline SVG and
    the spec the page script redraws it from."""
    import vl_convert as vlc

    svg = vlc.vegalite_to_svg(spec, vl_version=vl_version(), config=CONFIG)
    name = (spec.get("usermeta") or {}).get("tcplimits", {}).get("chart", "chart")
    return (f'<div class="{CHART_CLASS}" data-chart="{html.escape(name)}">'
            f'{_unique_ids(svg)}'
            f'<script type="application/json" class="tcpl-spec">{_json(spec)}</script></div>')


def to_html(chart: alt.TopLevelMixin) -> str:
    return spec_to_html(chart.to_dict())


def _render(spec: dict, **metadata) -> dict:
    return {"text/html": spec_to_html(spec)}


def use_offline_renderer() -> None:
    """Display every Altair chart as ``spec_to_html`` does and lift Altair's 5,000-row guard:
    the series of a big grid is longer, and it is drawn once, offline."""
    alt.renderers.register(RENDERER, _render)
    alt.renderers.enable(RENDERER)
    alt.data_transformers.disable_max_rows()
