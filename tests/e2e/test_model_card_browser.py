"""The model card's HTML in a real headless Chromium: it renders without console errors, the privacy
section comes right after the verdicts and is visible with every plot, and a full-page screenshot
is kept as a test artefact.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package. Skipped where they
are missing, except under CI (the environment variable ``CI`` set), which must have them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from fedward.client.app import app
from fedward.common.config import RunConfig
from fedward.server.app import CoordinatorSettings, coordinate
from fedward.server.model_card import CARD_HTML, write_card
from tests.server.loopback import LoopbackGrid, server_context

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
        webdriver = None
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
        evaluation={"bootstrap": 20},
        baselines={"families": ["naive_bayes"]},
        tuning={"budget": 1},
        audit={"reference_models": 2},
    )
    root = tmp_path_factory.mktemp("card-browser")
    settings = CoordinatorSettings(run=run, run_dir=str(root / "run"), engine="simulation")
    folder = coordinate(LoopbackGrid(app, 4), server_context(), settings).path
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
