"""The demo page on an FFHQ model, in headless Chromium: the detected face box and the pasted-back photo.

Run with ``pytest -m browser tests/service/test_align_browser.py`` (needs Debian's chromium and chromium-driver).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.app_helpers import CHROMEDRIVER, CHROMIUM, make_entry, make_face_entry, serve

data = pytest.importorskip(
    "skimage.data", reason="scikit-image ships the test portraits (pip install -e .[dev])"
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
    ),
]


def test_demo_page_shows_the_face_box_and_the_whole_photo(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    zoo = tmp_path / "zoo"
    make_face_entry(zoo)
    make_entry(zoo, "plain", teacher=False, samples=False)
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo, quality=92)
    wait = WebDriverWait(browser, 30)

    with serve(zoo, env={"DISTILL_DEFAULT_MODEL": "faces", "DISTILL_LEGACY_WORKERS": "0"}) as (url, _):
        browser.get(url + "/")
        wait.until(lambda d: "Choose a photo" in d.find_element(By.ID, "status").text)
        model = Select(browser.find_element(By.ID, "model"))
        assert "FFHQ faces" in model.first_selected_option.text
        assert Select(browser.find_element(By.ID, "size")).first_selected_option.text == "original"
        assert browser.find_element(By.ID, "align").is_enabled()

        browser.find_element(By.ID, "file").send_keys(str(photo))
        wait.until(ec.element_to_be_clickable((By.ID, "transform"))).click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(("Done", "Error")))
        assert browser.find_element(By.ID, "status").text.startswith("Done"), browser.find_element(
            By.ID, "status"
        ).text
        wait.until(
            lambda d: d.execute_script("return document.getElementById('student').naturalWidth") == 512
        )
        boxes = browser.find_elements(By.CSS_SELECTOR, "#boxes .face-box")
        assert len(boxes) == 1 and boxes[0].size["width"] > 10
        assert "1 face detected" in browser.find_element(By.ID, "original-caption").text
        stages = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#timings tbody td:first-child")]
        assert {"detect", "align", "pasteback"} <= set(stages)

        model.select_by_value("plain")  # a model without alignment: the face options are off
        assert not browser.find_element(By.ID, "align").is_enabled()
