"""app.config.Settings: DISTILL_* environment variables, defaults and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import README, Settings, readme_with_table
from app.runtime import choose_provider, choose_variant
from core.errors import DistillError
from model_zoo.registry import ModelEntry
from model_zoo.schema import EntryManifest


def test_defaults_and_env_parsing():
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env(
        {
            "DISTILL_MODEL_ZOO": "/zoo",
            "DISTILL_MODELS": "a, b",
            "DISTILL_PROVIDER": "CPU",
            "DISTILL_MAX_BATCH": "1",
            "DISTILL_MAX_WAIT_MS": "0.5",
            "DISTILL_LEGACY_TIMEOUT_S": "30",
            "DISTILL_VGG16": "/w/vgg16.pth",
            "DISTILL_INTRA_OP_THREADS": "",
            "UNRELATED": "x",
        }
    )
    assert s.model_zoo == Path("/zoo") and s.models == ("a", "b") and s.provider == "cpu"
    assert (
        s.max_batch == 1
        and s.max_wait_ms == 0.5
        and s.legacy_timeout_s == 30.0
        and s.vgg16 == Path("/w/vgg16.pth")
    )
    assert s.intra_op_threads == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DISTILL_PROVIDER": "tpu"}, "DISTILL_PROVIDER"),
        ({"DISTILL_MAX_BATCH": "eight"}, "DISTILL_MAX_BATCH"),
        ({"DISTILL_MAX_BATCH": "0"}, "must be > 0"),
        ({"DISTILL_INFERENCE_STREAMS": "0"}, "DISTILL_INFERENCE_STREAMS=0: must be > 0"),
        ({"DISTILL_VARIANT_CPU": "int4"}, "DISTILL_VARIANT_CPU"),
        ({"DISTILL_LEGACY_STEPS": "2000"}, "exceeds"),
        ({"DISTILL_OUTPUT_QUALITY": "101"}, "1..100"),
        ({"DISTILL_MAX_FACES": "0"}, "DISTILL_MAX_FACES=0: must be > 0"),
        ({"DISTILL_FACE_PIXELS": "1000"}, "DISTILL_FACE_PIXELS=1000 is below DISTILL_MAX_PIXELS"),
        ({"DISTILL_LEGACY_RESULT_BYTES": "0"}, "DISTILL_LEGACY_RESULT_BYTES=0: must be > 0"),
    ],
)
def test_bad_settings_are_clear_errors(env, message):
    with pytest.raises(DistillError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize("name", ["LEGACY_TIMEOUT_S", "MAX_WAIT_MS", "ENGINE_BUDGET_S"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_durations_must_be_finite(name, value):
    with pytest.raises(DistillError, match=f"DISTILL_{name}="):
        Settings.from_env({f"DISTILL_{name}": value})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DISTILL_LEGACY_TIMEOUT_S": "1e9"}, "DISTILL_LEGACY_TIMEOUT_S=1000000000.0: must be <= 86400"),
        ({"DISTILL_MAX_WAIT_MS": "60000"}, "DISTILL_MAX_WAIT_MS=60000.0: must be <= 10000"),
        ({"DISTILL_ENGINE_BUDGET_S": "86400"}, "DISTILL_ENGINE_BUDGET_S=86400.0: must be <= 3600"),
    ],
)
def test_out_of_range_durations_are_refused(env, message):
    with pytest.raises(DistillError, match=message):
        Settings.from_env(env)


def test_serve_refuses_a_nan_setting_in_one_line(monkeypatch, capsys):
    import uvicorn

    from distill.cli import main

    def started(*args, **kwargs):
        raise AssertionError("the service started with DISTILL_LEGACY_TIMEOUT_S=nan")

    monkeypatch.setattr(uvicorn, "run", started)
    monkeypatch.setenv("DISTILL_LEGACY_TIMEOUT_S", "nan")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "DISTILL_LEGACY_TIMEOUT_S='nan'" in err and "finite" in err


def test_only_from_env_reads_the_environment(monkeypatch):
    monkeypatch.setenv("DISTILL_MAX_BATCH", "3")
    assert Settings().max_batch == 4 and Settings(queue_size=5).max_batch == 4
    assert Settings.from_env().max_batch == 3
    s = Settings.from_env({"DISTILL_QUEUE_SIZE": "5"})
    assert s.max_batch == 4 and s.replace(max_batch=2) == Settings(queue_size=5, max_batch=2)
    with pytest.raises(DistillError, match="DISTILL_MAX_BATCH=0"):
        s.replace(max_batch=0)  # a copy is checked like the original
    with pytest.raises(ValidationError, match="frozen"):
        s.max_batch = 2


def test_the_readme_table_is_the_model():
    text = README.read_text(encoding="utf-8")
    assert readme_with_table(text) == text, (
        "the README's settings table differs: run python -m app.config --write-readme"
    )
    assert "| `DISTILL_MAX_WAIT_MS` | longest wait for a micro-batch to fill (ms) | 2.0 |" in text


def _entry(variants: dict) -> ModelEntry:
    files = {v["file"]: {"sha256": "0" * 64, "bytes": 0} for v in variants.values()}
    spec = EntryManifest.model_validate(
        {"name": "m", "input": {"size": [8, 8], "stride": 8}, "variants": variants, "files": files}
    )
    return ModelEntry("m", Path("/m"), spec)


def test_provider_and_variant_choice():
    assert choose_provider("cpu").name == "cpu"
    auto = choose_provider("auto")
    assert auto.name in ("cpu", "cuda") and auto.reason.startswith("auto")
    if auto.name == "cpu":
        with pytest.raises(DistillError, match="no CUDA execution provider"):
            choose_provider("cuda")
    entry = _entry(
        {
            "fp32": {"file": "a.onnx"},
            "fp16": {"file": "b.onnx", "providers": ["cuda"]},
            "int8": {"file": "c.onnx"},
        }
    )
    assert choose_variant(entry, "cuda", "fp16") == ("fp16", "configured")
    assert choose_variant(entry, "cpu", "fp16")[0] == "fp32"  # marked for CUDA only
    assert choose_variant(entry, "cpu", "int8") == ("int8", "configured")
    variant, why = choose_variant(_entry({"fp32": {"file": "a.onnx"}}), "cpu", "int8")
    assert variant == "fp32" and "int8 not in the entry" in why
