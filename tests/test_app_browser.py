"""The demo page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``; no driver download).

Run with ``pytest -m browser tests/test_app_browser.py`` after ``apt-get install -y chromium chromium-driver``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.app_helpers import NATIVE, gradient, make_entry, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"),
]


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e .[dev])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_demo_page_transforms_an_upload_and_runs_the_legacy_path(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    zoo = tmp_path / "zoo"
    make_entry(zoo, "tiny")
    photo = tmp_path / "photo.png"
    Image.fromarray(gradient(80, 60)).save(photo)
    wait = WebDriverWait(browser, 30)

    def result_loaded(driver) -> bool:
        return driver.execute_script("const i = document.getElementById('edited'); return i.complete && i.naturalWidth")

    with serve(zoo, env={"DISTILL_LEGACY_STEPS": "3"}) as (url, _):
        browser.get(url + "/")
        wait.until(lambda d: "Choose a photo" in d.find_element(By.ID, "status").text)
        assert [o.text for o in Select(browser.find_element(By.ID, "model")).options] == [
            f"tiny ({NATIVE}x{NATIVE}, cpu/fp32)"]
        assert browser.find_elements(By.CSS_SELECTOR, "#sample-list img")  # the entry's samples/ folder

        browser.find_element(By.ID, "file").send_keys(str(photo))
        wait.until(ec.element_to_be_clickable((By.ID, "transform"))).click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Done"))
        assert result_loaded(browser) == NATIVE
        assert browser.execute_script("return document.getElementById('original').naturalWidth") == 80
        stages = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#timings tbody td:first-child")]
        assert {"decode", "queue", "inference", "encode", "round trip (browser)"} <= set(stages)
        assert "/transform" in browser.find_element(By.ID, "edited-caption").text

        browser.find_element(By.CSS_SELECTOR, "#sample-list img").click()  # a sample replaces the upload
        wait.until(lambda d: d.execute_script("return document.getElementById('original').naturalWidth") == 48)
        wait.until(ec.element_to_be_clickable((By.ID, "legacy"))).click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(("Done", "4", "5")))
        assert browser.find_element(By.ID, "status").text.startswith("Done"), browser.find_element(By.ID, "status").text
        assert "/legacy/transform" in browser.find_element(By.ID, "edited-caption").text
        stages = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#timings tbody td:first-child")]
        assert "projection" in stages
