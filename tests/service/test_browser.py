"""The demo page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``; no driver download).

Run with ``pytest -m browser tests/service/test_browser.py`` after ``apt-get install -y chromium chromium-driver``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.app_helpers import CHROMEDRIVER, CHROMIUM, NATIVE, gradient, make_entry, serve

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
    ),
]


def test_demo_page_compares_original_student_and_legacy(browser, tmp_path):
    """Three panels of one display size, each result with its time and the speedup; the legacy run shows its
    progress and can be cancelled (the server's job stops); errors clear the stale result."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    zoo = tmp_path / "zoo"
    make_entry(zoo, "tiny")
    photo = tmp_path / "photo.png"
    Image.fromarray(gradient(80, 60)).save(photo)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    wait = WebDriverWait(browser, 30)

    def text(element_id: str) -> str:
        return browser.find_element(By.ID, element_id).text

    def loaded(element_id: str) -> int:
        return browser.execute_script(
            f"const i = document.getElementById('{element_id}'); "
            "return i.getAttribute('src') && i.complete ? i.naturalWidth : 0"
        )

    def box(element_id: str) -> tuple[int, int]:
        return tuple(
            browser.execute_script(
                f"const r = document.getElementById('{element_id}')"
                ".getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]"
            )
        )

    env = {"DISTILL_LEGACY_STEPS": "300", "DISTILL_LEGACY_MAX_STEPS": "100000"}
    with serve(zoo, env=env) as (url, _):
        browser.get(url + "/")
        wait.until(lambda d: "Choose a photo" in text("status"))
        assert [o.text for o in Select(browser.find_element(By.ID, "model")).options] == [
            f"tiny ({NATIVE}x{NATIVE}, cpu/fp32)"
        ]
        assert "tiny test student" in text("domain-note")  # the manifest's own description, above the upload
        note_y = browser.find_element(By.ID, "domain-note").location["y"]
        assert note_y < browser.find_element(By.ID, "file").location["y"]
        assert browser.find_elements(By.CSS_SELECTOR, "#sample-list img")  # the entry's samples/ folder
        steps = browser.find_element(By.ID, "steps")
        assert steps.get_attribute("value") == "100"  # the demo's smaller default...
        browser.find_element(By.ID, "steps-reference").click()
        assert steps.get_attribute("value") == "300"  # ...and the reference setting one click away

        # the student: its time, same display size as the original
        browser.find_element(By.ID, "file").send_keys(str(photo))
        wait.until(ec.element_to_be_clickable((By.ID, "transform"))).click()
        wait.until(lambda d: text("status").startswith(("Done", "Error")))
        assert text("status").startswith("Done"), text("status")
        wait.until(lambda d: loaded("student") == NATIVE)
        assert loaded("original") == 80
        assert box("original") == box("student") == box("legacy-result") and box("student")[0] > 200
        assert " ms" in text("student-caption") or " s" in text("student-caption")
        stages = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#timings tbody td:first-child")]
        assert {"decode", "queue", "inference", "encode", "round trip (browser)"} <= set(stages)

        # a long legacy run: progress with the time left, then cancelled; the server's job stops
        steps.clear()
        steps.send_keys("100000")
        browser.find_element(By.ID, "legacy").click()
        wait.until(lambda d: int(browser.find_element(By.ID, "legacy-progress").get_attribute("value")) > 0)
        wait.until(lambda d: "s left" in text("legacy-progress-text"))  # "estimating time left…" until it can
        assert text("legacy-progress-text").startswith("step ")
        job_id = browser.find_element(By.ID, "legacy-running").get_attribute("data-job")
        browser.find_element(By.ID, "cancel").click()
        wait.until(lambda d: "cancelled" in text("status"))
        job = httpx.get(f"{url}/legacy/jobs/{job_id}").json()
        assert job["status"] == "cancelled" and job["steps_done"] < 100_000
        assert not loaded("legacy-result")

        # a short legacy run: its image, its time and the speedup beside the student's
        steps.clear()
        steps.send_keys("3")
        wait.until(ec.element_to_be_clickable((By.ID, "legacy"))).click()
        wait.until(lambda d: text("status").startswith(("Done: legacy", "Error")))
        assert text("status").startswith("Done: legacy"), text("status")
        wait.until(lambda d: loaded("legacy-result") == NATIVE)
        assert "3 steps" in text("legacy-caption") and "slower than the student" in text("legacy-caption")
        assert "faster than legacy" in text("student-caption")
        stages = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#timings tbody td:first-child")]
        assert "projection" in stages

        # an error clears the stale results instead of leaving them under the new photo's name
        browser.find_element(By.ID, "file").send_keys(str(broken))
        wait.until(ec.element_to_be_clickable((By.ID, "transform"))).click()
        wait.until(lambda d: text("status").startswith("Error"))
        assert "not_an_image" in text("status")
        assert not loaded("student") and not loaded("legacy-result")
        assert text("student-caption") == "Student" and not browser.find_elements(
            By.CSS_SELECTOR, "#timings tbody tr"
        )
