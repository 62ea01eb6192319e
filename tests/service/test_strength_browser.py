"""The demo page's strength slider in headless Chromium: shown only for conditional models, it re-runs
the student as it moves. Run with ``pytest -m browser tests/service/test_strength_browser.py``."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from tests.app_helpers import (
    CHROMEDRIVER,
    CHROMIUM,
    MULTI_EDITS,
    gradient,
    make_entry,
    make_multi_edit_entry,
    serve,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (shutil.which(CHROMIUM) or shutil.which("chromium")) or not shutil.which(CHROMEDRIVER),
        reason="needs Debian's chromium and chromium-driver",
    ),
]


def test_slider_for_conditional_models_reruns_the_student(browser, conditional_entry, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    zoo = tmp_path / "zoo"
    shutil.copytree(conditional_entry, zoo / "cond")
    make_entry(zoo, "tiny", teacher=False, samples=False)
    photo = tmp_path / "photo.png"
    Image.fromarray(gradient(16, 16)).save(photo)
    wait = WebDriverWait(browser, 30)

    def text(element_id: str) -> str:
        return browser.find_element(By.ID, element_id).text

    def shown(element_id: str) -> bool:
        return browser.find_element(By.ID, element_id).is_displayed()

    with serve(zoo, env={"DISTILL_DEFAULT_MODEL": "cond"}) as (url, _):
        browser.get(url + "/")
        wait.until(lambda d: "Choose a photo" in text("status"))
        assert shown("strength-control")
        slider = browser.find_element(By.ID, "strength")
        assert (slider.get_attribute("min"), slider.get_attribute("max"), slider.get_attribute("value")) == (
            "-1.5",
            "1.5",
            "1",
        )
        Select(browser.find_element(By.ID, "model")).select_by_value("tiny")
        assert not shown("strength-control")  # a fixed-strength model: no dial
        Select(browser.find_element(By.ID, "model")).select_by_value("cond")
        assert shown("strength-control")

        browser.find_element(By.ID, "file").send_keys(str(photo))
        browser.find_element(By.ID, "transform").click()
        wait.until(lambda d: "strength 1" in text("student-caption"))
        # moving the slider re-runs the edit (debounced): the caption follows the strength
        browser.execute_script(
            "const s = document.getElementById('strength'); s.value = '-0.5';"
            "s.dispatchEvent(new Event('input'));"
        )
        assert text("strength-value") == "-0.50"
        wait.until(lambda d: "strength -0.5" in text("student-caption"))
        assert text("status").startswith("Done"), text("status")


def test_one_slider_per_edit_of_a_multi_edit_student(browser, tmp_path):
    """A student of several edits gets a slider per edit of /models' edits; moving one re-runs the student with
    the whole vector (the caption shows X-Edits)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    zoo = tmp_path / "zoo"
    make_multi_edit_entry(zoo, "multi", teacher=False)
    photo = tmp_path / "photo.png"
    Image.fromarray(gradient(32, 32)).save(photo)
    wait = WebDriverWait(browser, 30)

    def text(element_id: str) -> str:
        return browser.find_element(By.ID, element_id).text

    with serve(zoo) as (url, _):
        browser.get(url + "/")
        wait.until(lambda d: "Choose a photo" in text("status"))
        assert not browser.find_element(By.ID, "strength-control").is_displayed()
        sliders = browser.find_elements(By.CSS_SELECTOR, "#edit-sliders input[data-edit]")
        assert [
            (s.get_attribute("data-edit"), s.get_attribute("min"), s.get_attribute("max")) for s in sliders
        ] == [(name, f"{low:g}", f"{high:g}") for name, (low, high) in MULTI_EDITS.items()]
        browser.find_element(By.ID, "file").send_keys(str(photo))
        browser.find_element(By.ID, "transform").click()
        wait.until(lambda d: "age=0,smile=0,glasses=0" in text("student-caption"))
        browser.execute_script(
            "const s = document.querySelector('#edit-sliders input[data-edit=smile]'); s.value = '1.2';"
            "s.dispatchEvent(new Event('input'));"
        )
        wait.until(lambda d: "age=0,smile=1.2,glasses=0" in text("student-caption"))
        assert text("status").startswith("Done"), text("status")
