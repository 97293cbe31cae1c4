"""The live dashboard page in headless Chromium (Debian's, driven by Selenium) against `up`."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, Pipeline
from weathertweets.countries import CANONICAL
from weathertweets.gendata import TEXTS, generate

pytestmark = pytest.mark.e2e
SCREENSHOTS = ROOT / "build" / "screenshots"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("WT_REQUIRE_ENGINES") == "1":
            pytest.fail("chromium and chromedriver are missing: tools/browser/install.sh")
        pytest.skip("chromium not installed (tools/browser/install.sh)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1400,2200",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    session = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))
    try:
        yield session
    finally:
        session.quit()


def _digits(text: str) -> int | None:
    found = re.sub(r"\D", "", text)
    return int(found) if found else None


def _until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def test_the_dashboard_shows_what_the_api_says(pipeline: Pipeline, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import Select

    assert isinstance(browser, WebDriver)
    pipeline.env = {"WT_UNKNOWN_COUNTRIES": "accept"}  # Narnia, for the map's unknown list
    pipeline.start()
    api = httpx.Client(base_url=pipeline.url, timeout=30)
    browser.get(pipeline.url + "/")  # a browser's Accept header gets the page, not JSON
    assert browser.title.startswith("Weather Tweets")

    def el(element_id: str) -> str:
        return str(browser.find_element(By.ID, element_id).text)

    _until(lambda: el("status") == "live", "the live stream")
    records = [*generate(1500, seed=9), {"texto": "Lluvia", "pais": "Narnia"}]
    assert api.post("/api/v1/tweets", json=records).status_code == 202
    stats = pipeline.wait_settled(len(records))

    _until(lambda: _digits(el("total")) == stats["total"], "the total")
    assert _digits(el("archived")) == stats["archived"]
    countries = stats["countries"]
    assert isinstance(countries, dict)
    assert _digits(el("countries-count")) == len(countries)
    rows = browser.find_elements(By.CSS_SELECTOR, "#country-bars .bar")
    assert len(rows) == len(countries)
    top = max(countries, key=lambda name: countries[name])
    assert rows[0].get_attribute("data-name") == top
    assert _digits(rows[0].text.splitlines()[-1]) == countries[top]

    painted = browser.find_element(By.ID, "map").get_attribute("data-painted")
    assert painted is not None and int(painted) == len(countries) - 1  # all but Narnia
    assert "Narnia (1)" in el("map-unknown")

    Select(browser.find_element(By.ID, "country-select")).select_by_visible_text("Guatemala")
    expected = api.get("/api/v1/countries/Guatemala").json()
    panel = browser.find_element(By.ID, "country-texts")
    _until(lambda: panel.get_attribute("data-pais") == "Guatemala", "Guatemala's texts")
    assert panel.get_attribute("data-total") == str(expected["total"])
    first_text = panel.find_elements(By.CSS_SELECTOR, ".bar")[0].get_attribute("data-name")
    assert first_text == expected["texts"][0]["texto"]

    weather = api.get("/api/v1/conditions").json()["countries"]
    row = browser.find_element(By.CSS_SELECTOR, '#weather tr[data-pais="Guatemala"]')
    assert weather["Guatemala"]["dominant"] in row.text
    assert browser.find_elements(By.CSS_SELECTOR, "#recent tr")

    _until(lambda: el("latency-p50") != "–", "the latency")
    _until(lambda: el("energy-j1000") not in ("–", ""), "the energy per tweet")
    assert float(el("energy-j1000").replace(".", "").replace(",", ".")) > 0  # 1.234,5
    assert el("energy-kwh").endswith(("kWh", " Wh", "mWh"))  # a readable unit, no 1e-6
    assert browser.find_element(By.CSS_SELECTOR, "link[rel=icon]").get_attribute("href")
    assert "CPU-time estimate" in el("energy-model")

    more = generate(500, seed=10)  # live: the page follows without a reload
    assert api.post("/api/v1/tweets", json=more).status_code == 202
    _until(lambda: _digits(el("total")) == len(records) + len(more), "the new total")
    _until(lambda: bool(browser.find_elements(By.CSS_SELECTOR, "#rate-chart polyline")), "rates")
    assert _digits(el("total")) == pipeline.stats()["total"]

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "dashboard.png"))


def test_the_page_keeps_up_with_200_countries_and_100_000_tweets(
    pipeline: Pipeline, browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    pipeline.start()
    names = sorted(set(CANONICAL.values()))[:200]  # 200 countries, one name each
    texts = [t for group in TEXTS.values() for t in group]
    api = httpx.Client(base_url=pipeline.url, timeout=60)
    for start in range(0, 100_000, 10_000):
        batch = [
            {"texto": texts[i % len(texts)], "pais": names[(i * 7) % len(names)]}
            for i in range(start, start + 10_000)
        ]
        assert api.post("/api/v1/tweets", json=batch).status_code == 202
    stats = pipeline.wait_settled(100_000, timeout=180)
    browser.get(pipeline.url + "/dashboard")

    def total() -> int | None:
        return _digits(browser.find_element(By.ID, "total").text)

    _until(lambda: total() == 100_000, "100 000 tweets on the page")
    countries = stats["countries"]
    assert isinstance(countries, dict) and len(countries) == 200
    assert len(browser.find_elements(By.CSS_SELECTOR, "#country-bars .bar")) == 200
    assert len(browser.find_elements(By.CSS_SELECTOR, "#weather tr")) == 200
    painted = int(browser.find_element(By.ID, "map").get_attribute("data-painted") or 0)
    assert painted >= 180  # a few micro-states have no shape on the map
    render_ms = browser.find_element(By.TAG_NAME, "body").get_attribute("data-render-ms")
    assert render_ms is not None  # measured per update; docs/benchmarks.md reports it
    (SCREENSHOTS / "render-ms.txt").parent.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "render-ms.txt").write_text(render_ms + "\n")
