"""The model's recorded training domain, checked on every /transform input: the header, the refusal, the count."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.main import create_app
from core.errors import DistillError
from distill.cli import main
from tests.app_helpers import add_domain, make_entry, make_face_entry, wait_ready

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
    from fastapi.testclient import TestClient


def flat(level: int) -> bytes:
    """A flat grey PNG: level 200 lies inside the test domain (bright >= 0), level 30 outside (bright -0.76)."""
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), level, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """``checked`` records a domain (mean level >= 0 on the originals); ``plain`` records none."""
    root = tmp_path_factory.mktemp("zoo")
    make_entry(root, "checked", teacher=False, samples=False)
    add_domain(root / "checked")
    make_entry(root, "plain", teacher=False, samples=False)
    return root


def client_for(zoo: Path, **overrides) -> TestClient:
    settings = Settings(model_zoo=zoo, default_model="checked", warmup_runs=1, legacy_workers=0)
    return TestClient(create_app(settings.replace(**overrides)))


def post(client: TestClient, level: int, model: str = "checked"):
    return client.post("/transform", files={"image": ("f.png", flat(level))}, data={"model": model})


def verdicts(client: TestClient) -> dict[str, float]:
    """``distill_domain_verdicts_total`` of model ``checked``, by verdict (the process's counters: tests compare
    before and after)."""
    out = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('distill_domain_verdicts_total{model="checked"'):
            verdict = line.split('verdict="')[1].split('"')[0]
            out[verdict] = float(line.rsplit(" ", 1)[1])
    return out


def outside_domain_refusals(client: TestClient) -> float:
    """``distill_requests_rejected_total`` for /transform's ``outside_domain``."""
    prefix = 'distill_requests_rejected_total{reason="outside_domain",route="/transform"}'
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(prefix)]
    assert lines, "the series exists from the start"
    return float(lines[0].rsplit(" ", 1)[1])


def test_warn_answers_both_verdicts_and_says_which(zoo):
    with client_for(zoo) as c:
        wait_ready(c)
        before = verdicts(c)
        assert set(before) == {"inside", "outside"}  # the series exist from the start
        inside, outside = post(c, 200), post(c, 30)
        assert inside.status_code == outside.status_code == 200
        assert inside.headers["X-Distill-Domain"] == "inside"
        assert outside.headers["X-Distill-Domain"] == "outside; bright -0.76 below 0.00"
        assert "domain;dur=" in inside.headers["Server-Timing"]
        assert verdicts(c) == {k: v + 1 for k, v in before.items()}
        models = {m["name"]: m for m in c.get("/models").json()["models"]}
        assert models["checked"]["domain"] == "bright >= 0" and models["checked"]["domain_check"] == "warn"
        plain = post(c, 30, model="plain")  # no recorded domain: nothing said
        assert plain.status_code == 200 and "X-Distill-Domain" not in plain.headers
        assert models["plain"]["domain"] is None


def test_refuse_answers_422_outside_domain_and_edits_inside(zoo):
    with client_for(zoo, domain_check="refuse") as c:
        wait_ready(c)
        before, refusals = verdicts(c), outside_domain_refusals(c)
        refused = post(c, 30)
        assert refused.status_code == 422
        body = refused.json()
        assert body["error"] == "outside_domain" and body["model"] == "checked"
        assert (
            body["domain"] == "outside; bright -0.76 below 0.00"
            and "bright -0.76 below 0.00" in body["detail"]
        )
        assert refused.headers["X-Distill-Domain"] == body["domain"]
        assert post(c, 200).status_code == 200
        assert verdicts(c) == {k: v + 1 for k, v in before.items()}
        assert outside_domain_refusals(c) == refusals + 1


def test_off_scores_nothing(zoo):
    with client_for(zoo, domain_check="off") as c:
        wait_ready(c)
        before = verdicts(c)
        r = post(c, 30)
        assert r.status_code == 200 and "X-Distill-Domain" not in r.headers
        assert verdicts(c) == before


def test_the_setting_is_strict():
    assert Settings.from_env({"DISTILL_DOMAIN_CHECK": "Refuse"}).domain_check == "refuse"
    with pytest.raises(DistillError, match="DISTILL_DOMAIN_CHECK='block'"):
        Settings.from_env({"DISTILL_DOMAIN_CHECK": "block"})


def test_distill_transform_records_the_domain_per_input(zoo, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "bright.png").write_bytes(flat(200))
    (photos / "dark.png").write_bytes(flat(30))
    monkeypatch.setenv("DISTILL_WARMUP_RUNS", "1")

    def rows(model: str, out: Path) -> dict[str, dict]:
        assert (
            main(
                [
                    "transform",
                    str(photos),
                    "--model",
                    model,
                    "--out",
                    str(out),
                    "--model-zoo",
                    str(zoo),
                    "--quiet",
                ]
            )
            == 0
        )
        lines = (out / "results.jsonl").read_text().splitlines()
        return {Path(row["source"]).name: row for row in map(json.loads, lines)}

    warned = rows("checked", tmp_path / "warn")
    assert warned["bright.png"]["status"] == warned["dark.png"]["status"] == "ok"
    assert warned["bright.png"]["domain"] == "inside"
    assert warned["dark.png"]["domain"] == "outside; bright -0.76 below 0.00"
    assert all(row["domain"] is None for row in rows("plain", tmp_path / "plain").values())

    monkeypatch.setenv("DISTILL_DOMAIN_CHECK", "refuse")
    refused = rows("checked", tmp_path / "refuse")
    assert refused["bright.png"]["status"] == "ok" and refused["bright.png"]["domain"] == "inside"
    dark = refused["dark.png"]
    assert (dark["status"], dark["error"], dark["http_status"]) == ("error", "outside_domain", 422)
    assert (
        dark["domain"] == "outside; bright -0.76 below 0.00"
        and not (tmp_path / "refuse" / "dark.jpg").exists()
    )


def test_the_face_path_judges_every_face_and_reports_the_farthest_out(tmp_path):
    """faces=all: one dark face outside makes the request outside, though the largest face lies inside."""
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the test portrait")
    make_face_entry(tmp_path)
    add_domain(tmp_path / "faces", keep=(-0.2, None))
    face = data.astronaut()[40:300, 110:340]
    photo = np.full((320, 640, 3), 200, np.uint8)
    photo[30:290, 30:260] = (face * 0.35).astype(np.uint8)  # the smaller face (as detected), dark
    photo[30:290, 380:610] = face[:, ::-1]
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG", quality=92)
    settings = Settings(model_zoo=tmp_path, default_model="faces", warmup_runs=1, legacy_workers=0)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)

        def verdict(faces: str) -> str:
            r = c.post(
                "/transform",
                files={"image": ("p.jpg", buf.getvalue(), "image/jpeg")},
                data={"faces": faces, "size": "original"},
            )
            assert r.status_code == 200 and r.headers["X-Faces"] == ("2" if faces == "all" else "1")
            return r.headers["X-Distill-Domain"]

        assert verdict("largest") == "inside"
        assert verdict("all").startswith("outside; bright -0.") and verdict("all").endswith(" below -0.20")
