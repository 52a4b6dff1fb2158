"""The model card's HTML in a real headless Chromium: it renders without console errors, the privacy
section comes right after the verdicts and is visible with every plot, and a full-page screenshot
is kept as a test artefact. On the runs of tests/e2e/conftest.py (an overfit model without DP and
the default DP model): the card's sections in the order a privacy officer reads them, and the red
no-DP state of the card and of audit.html, read from the browser's computed styles.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package. Skipped where they
are missing, except under CI (the environment variable ``CI`` set), which must have them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedward.client.app import app
from fedward.common.evaluation_config import (
    AuditConfig,
    BaselinesConfig,
    EvaluationConfig,
    TuningConfig,
)
from fedward.common.run_config import RunConfig
from fedward.server.app import coordinate
from fedward.server.coordinator_settings import CoordinatorSettings
from fedward.server.model_card import CARD_HTML, write_card
from tests.e2e.conftest import FinishedRun
from tests.server.loopback import LoopbackGrid, as_grid, server_context

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _browser_or_skip() -> Any:
    """Selenium's webdriver module, or a skip (a failure under CI) naming what is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("the selenium Python package (pip install 'selenium>=4.20')")
        webdriver = None  # type: ignore[assignment]  # reported as missing just below
    if missing:
        why = (
            f"the model-card browser test needs {', '.join(missing)} "
            "(apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide a browser: {why}")
        pytest.skip(why)
    return webdriver


def _artefact_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("FEDWARD_TEST_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def card_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _browser_or_skip()  # before the federation: no browser, no run to render
    run = RunConfig(
        rounds=2,
        evaluation=EvaluationConfig(bootstrap=20),
        baselines=BaselinesConfig(families=["naive_bayes"]),
        tuning=TuningConfig(budget=1),
        audit=AuditConfig(reference_models=2),
    )
    root = tmp_path_factory.mktemp("card-browser")
    settings = CoordinatorSettings(run=run, run_dir=str(root / "run"), engine="simulation")
    folder = coordinate(as_grid(LoopbackGrid(app, 4)), server_context(), settings).path
    write_card(folder)
    return folder / CARD_HTML


def test_the_model_card_renders_in_a_real_browser(card_html: Path, tmp_path: Path) -> None:
    webdriver = _browser_or_skip()
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(card_html.resolve().as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        assert driver.title.startswith("Model card")

        privacy = driver.find_element(By.ID, "privacy")
        assert privacy.is_displayed()
        assert "ε" in privacy.text and "clipping norm" in privacy.text
        # Privacy comes right after the warnings and verdicts, before the model details.
        verdicts = driver.find_element(By.ID, "verdicts")
        details = driver.find_element(By.ID, "model-details")
        assert verdicts.location["y"] < privacy.location["y"] < details.location["y"]
        assert "eligible for sign-off" in verdicts.text and "ready for release" not in verdicts.text

        plots = driver.find_elements(By.CSS_SELECTOR, "img.plot")
        assert len(plots) >= 4  # ROC, precision-recall, calibration, privacy-utility, audit ROCs
        for img in plots:
            driver.execute_script("arguments[0].scrollIntoView();", img)
            loaded = driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", img
            )
            assert loaded and loaded > 0, img.get_attribute("id")
            assert img.is_displayed(), img.get_attribute("id")
            assert img.get_attribute("alt")

        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe

        # The whole page, not just the window: size the window to the document, from the top.
        width = driver.execute_script("return document.documentElement.scrollWidth")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(max(int(width), 1280), int(height) + 100)
        driver.execute_script("window.scrollTo(0, 0);")
        shot = _artefact_dir(tmp_path) / "model_card.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        print(f"model card screenshot: {shot}")
    finally:
        driver.quit()
    # Keep the page itself beside its screenshot when artefacts are collected.
    if os.environ.get("FEDWARD_TEST_ARTIFACTS"):
        shutil.copy(card_html, _artefact_dir(tmp_path) / CARD_HTML)


# ---- section order and the red no-DP state, on real `fedward simulate` runs ----------------------

# Mitchell et al.'s sections, in their order, after Privacy (which comes first, issue 18 item 5).
MITCHELL_ORDER = [
    "model-details",
    "intended-use",
    "factors",
    "metrics",
    "evaluation-data",
    "training-data",
    "quantitative-analyses",
    "ethical-considerations",
    "caveats-and-recommendations",
]


@contextlib.contextmanager
def _chromium() -> Iterator[Any]:
    """A headless Chromium, quit afterwards; skips (fails under CI) where there is none."""
    webdriver = _browser_or_skip()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _rgb(driver: Any, element: Any, prop: str) -> tuple[int, int, int]:
    """The element's computed colour ``prop`` (e.g. backgroundColor) as (r, g, b)."""
    value = driver.execute_script(f"return getComputedStyle(arguments[0]).{prop}", element)
    match = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, [\d.]+)?\)", value)
    assert match, value
    r, g, b = (int(x) for x in match.groups())
    return r, g, b


def _is_red(rgb: tuple[int, int, int]) -> bool:
    r, g, b = rgb
    return r >= 150 and g <= 60 and b <= 60


def _is_white(rgb: tuple[int, int, int]) -> bool:
    return min(rgb) >= 240


def _body_order(driver: Any) -> list[str]:
    """The ids of the body's top-level elements that have one, in document order."""
    return list(
        driver.execute_script(
            "return Array.from(document.body.children).filter(e => e.id).map(e => e.id)"
        )
    )


def _card_sections_in_order(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    order = _body_order(driver)
    sections = [
        e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "body > section")
    ]
    # The verdicts, then Privacy as the first section; Mitchell et al.'s sections after it.
    assert sections[0] == "privacy", sections
    assert order.index("verdicts") < order.index("privacy"), order
    assert [s for s in sections if s in MITCHELL_ORDER] == MITCHELL_ORDER, sections
    # Nothing of the card's own (no heading, no section) sits between the verdicts and Privacy.
    between = driver.execute_script(
        "const out = []; let e = document.getElementById('verdicts').nextElementSibling;"
        "while (e && e.id !== 'privacy') { out.push(e.tagName); e = e.nextElementSibling; }"
        "return out;"
    )
    assert set(between) <= {"UL"}, between  # only the list of problems against release
    # And so they are rendered: each below the one before it.
    ys = [driver.find_element(By.ID, i).location["y"] for i in ("verdicts", "privacy")]
    ys += [driver.find_element(By.ID, i).location["y"] for i in MITCHELL_ORDER]
    assert ys == sorted(ys) and len(set(ys)) == len(ys), ys


def test_the_non_dp_card_opens_red_then_verdicts_then_privacy(overfit_run: FinishedRun) -> None:
    from selenium.webdriver.common.by import By

    with _chromium() as driver:
        driver.get((overfit_run.dir / CARD_HTML).resolve().as_uri())
        order = _body_order(driver)
        assert order[0] == "warnings", order  # the warnings come before the title, first
        banner = driver.find_element(By.ID, "warnings")
        assert banner.is_displayed()
        assert _is_red(_rgb(driver, banner, "backgroundColor")), _rgb(
            driver, banner, "backgroundColor"
        )
        assert _is_white(_rgb(driver, banner, "color"))
        lines = [p.text for p in banner.find_elements(By.TAG_NAME, "p")]
        assert lines[0].startswith("⚠ WARNING: NO DIFFERENTIAL PRIVACY: this model was trained")
        assert lines[1].startswith(
            "⚠ WARNING: AUDIT FAILED (verdict: fail: no DP guarantee, leak observed)"
        )
        assert "leak observed: canary attack:" in lines[1]  # with what was observed
        verdicts = driver.find_element(By.ID, "verdicts")
        assert verdicts.text.startswith(
            "DP guarantee: no · membership audit passed: no (fail: no DP guarantee, leak observed)"
        )
        assert "not-ready" in (verdicts.get_attribute("class") or "").split()
        # The banner's bottom edge is above the verdicts, the verdicts above Privacy.
        assert banner.location["y"] + banner.size["height"] <= verdicts.location["y"]
        _card_sections_in_order(driver)
        privacy = driver.find_element(By.ID, "privacy")
        assert "none: trained without differential privacy" in privacy.text
        assert driver.find_element(By.ID, "audit").text == (
            "Membership-inference audit: fail: no DP guarantee, leak observed"
        )


def test_the_dp_card_has_no_red_banner_and_the_same_order(dp_run: FinishedRun) -> None:
    from selenium.webdriver.common.by import By

    with _chromium() as driver:
        driver.get((dp_run.dir / CARD_HTML).resolve().as_uri())
        assert driver.find_elements(By.ID, "warnings") == []
        verdicts = driver.find_element(By.ID, "verdicts")
        assert verdicts.text.startswith("DP guarantee: yes · membership audit passed: yes (pass)")
        assert not _is_red(_rgb(driver, verdicts, "backgroundColor"))
        _card_sections_in_order(driver)


def test_the_audit_page_is_red_without_dp(overfit_run: FinishedRun, dp_run: FinishedRun) -> None:
    from selenium.webdriver.common.by import By

    with _chromium() as driver:
        driver.get((overfit_run.dir / "audit.html").resolve().as_uri())
        banner = driver.find_element(By.ID, "no-dp")
        verdict = driver.find_element(By.ID, "verdict")
        assert _body_order(driver)[:2] == ["no-dp", "verdict"]
        assert banner.text.startswith("NO DP GUARANTEE: a model this audit covers was trained")
        assert verdict.text == "Verdict: fail: no DP guarantee, leak observed"
        for element in (banner, verdict):
            assert element.is_displayed()
            assert _is_red(_rgb(driver, element, "backgroundColor")), element.get_attribute("id")
            assert _is_white(_rgb(driver, element, "color")), element.get_attribute("id")
        # The model's heading and its no-DP failure line are red too.
        heading = driver.find_element(By.CSS_SELECTOR, "#model-run h2")
        assert heading.text.endswith(": fail: no DP guarantee, leak observed")
        assert _is_red(_rgb(driver, heading, "backgroundColor"))
        failure = driver.find_element(By.CSS_SELECTOR, "#model-run p.banner")
        assert failure.text.startswith("NO DP GUARANTEE: the run's model")
        assert _is_red(_rgb(driver, failure, "backgroundColor"))

        # The DP run's page: no banner, and a verdict that is not red.
        driver.get((dp_run.dir / "audit.html").resolve().as_uri())
        assert driver.find_elements(By.ID, "no-dp") == []
        verdict = driver.find_element(By.ID, "verdict")
        assert verdict.text == "Verdict: pass"
        r, g, b = _rgb(driver, verdict, "backgroundColor")
        assert g > r and g > b, (r, g, b)  # green
