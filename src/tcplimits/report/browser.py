"""A look at the finished report in headless Chromium (Debian's chromium and chromium-driver,
driven by selenium) with networking off: console errors, requests that leave the page, charts
that were not drawn, and a full-page screenshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tcplimits.report.embed import SCRIPT_ID


def browser_available(chromium: str = "/usr/bin/chromium",
                      chromedriver: str = "/usr/bin/chromedriver") -> str | None:
    """Why the browser check cannot run here, or None when it can."""
    import importlib.util

    missing = [name for name, ok in (("chromium", Path(chromium).exists()),
                                     ("chromedriver", Path(chromedriver).exists()),
                                     ("selenium", importlib.util.find_spec("selenium")))
               if not ok]
    return f"not installed: {', '.join(missing)}" if missing else None


def check_in_browser(page: Path, screenshot: Path) -> list[str]:
    """Open the rendered page offline, save a screenshot; the problems found (console
    errors, network requests, charts not drawn), empty when the page is sound."""
    seen = browser_check(page, screenshot)
    problems = [f"console: {m['message']}" for m in seen["console"] if m["level"] == "SEVERE"]
    problems += [f"request: {url}" for url in seen["requests"]
                 if not url.startswith(("file:", "data:"))]
    problems += [f"chart {c['name']} not drawn" for c in seen["charts"]
                 if not c["drawn"] or not c["width"]]
    problems += [f"chart {c['name']} not interactive (static SVG kept)" for c in seen["charts"]
                 if c["drawn"] and not c["embedded"]]
    problems += [f"a script the renderer did not put there: {s}" for s in seen["foreign"]]
    return problems


def browser_check(page: Path, screenshot: Path | None = None, *,
                  chromium: str = "/usr/bin/chromium",
                  chromedriver: str = "/usr/bin/chromedriver",
                  width: int = 1280) -> dict[str, Any]:
    """Open ``page`` from disk in headless Chromium with networking off.

    Returns the console messages, every request the page made, and per chart container
    (``.tcpl-chart``) how many SVG/canvas elements it holds (the static SVG, or the one
    vega-embed drew in its place), their drawn size, and whether vega-embed drew it
    (``embedded``); saves a full-page screenshot when asked."""
    import base64
    import json

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # Root in a container: no sandbox. A dead proxy plus CDP's offline mode: any fetch fails
    # and shows up in the console and the request log.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},1000", "--proxy-server=127.0.0.1:9",
                "--proxy-bypass-list=<-loopback>", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
        driver.get(Path(page).resolve().as_uri())
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        # vega-embed draws asynchronously: wait until every chart is drawn or given up on.
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("""
            return !document.getElementById('tcplimits-vega') ||
              [...document.querySelectorAll('.tcpl-chart')].every(div =>
                div.dataset.embedded || !div.querySelector('.tcpl-live'));"""))
        charts = driver.execute_script("""
            return [...document.querySelectorAll('.tcpl-chart')].map(div => {
              const drawn = [...div.querySelectorAll(
                ':scope > svg, :scope > canvas, :scope > .tcpl-live > svg, ' +
                ':scope > .tcpl-live > canvas')];
              const box = drawn.length ? drawn[0].getBoundingClientRect() : {width: 0, height: 0};
              return {name: div.dataset.chart, drawn: drawn.length,
                      embedded: div.dataset.embedded === 'yes',
                      marks: div.querySelectorAll('path, circle, rect, line, text').length,
                      width: box.width, height: box.height};
            });""")
        # Scripts and handlers the page holds that the renderer did not put there (data that
        # reached the page as markup): the chart bundle and the charts' JSON specs are ours.
        foreign = driver.execute_script(f"""
            const ours = s => s.id === '{SCRIPT_ID}' ||
              (s.type === 'application/json' && s.classList.contains('tcpl-spec'));
            const scripts = [...document.querySelectorAll('script')].filter(s => !ours(s))
              .map(s => '<script> ' + (s.src || s.textContent).slice(0, 80));
            const handlers = [...document.querySelectorAll('*')].flatMap(e =>
              [...e.attributes].filter(a => a.name.startsWith('on') ||
                /^\\s*javascript:/i.test(a.value))
              .map(a => '<' + e.tagName.toLowerCase() + ' ' + a.name + '=' +
                   a.value.slice(0, 60) + '>'));
            return scripts.concat(handlers);""")
        console = driver.get_log("browser")
        requests = []
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                requests.append(message["params"]["request"]["url"])
        if screenshot is not None:
            size = driver.execute_script(
                "return [document.documentElement.scrollWidth, "
                "document.documentElement.scrollHeight]")
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}})
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        return {"console": console, "requests": requests, "charts": charts,
                "foreign": foreign, "screenshot": screenshot}
    finally:
        driver.quit()
