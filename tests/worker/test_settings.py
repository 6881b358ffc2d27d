"""Settings: env and flags, defaults derived from the model, and the visibility/deadline rule."""

from __future__ import annotations

import pytest

from worker.errors import SettingsError
from worker.settings import load_settings


def test_env_then_flags(monkeypatch):
    monkeypatch.setenv("ORCD_MAX_BATCH", "4")
    monkeypatch.setenv("ORCD_MODEL", "/m/Tiny.gguf")
    settings = load_settings(max_batch=None, gpu=1)
    assert (settings.max_batch, settings.gpu, settings.worker_concurrency) == (4, 1, 8)
    assert settings.queue_name == "orcd.tiny"
    assert load_settings(max_batch=2, queue="q").queue_name == "q"
    assert load_settings(max_batch=2).max_batch == 2


def test_invalid_values_name_the_setting(monkeypatch):
    monkeypatch.setenv("ORCD_MAX_BATCH", "0")
    with pytest.raises(SettingsError, match=r"max_batch \(ORCD_MAX_BATCH\): Input should be greater"):
        load_settings()


def test_visibility_timeout_must_outlast_an_attempt():
    with pytest.raises(SettingsError, match=r"visibility_timeout_s \(60\) must exceed job_timeout_s \(50\)"):
        load_settings(job_timeout_s=50, visibility_timeout_s=60)
    assert load_settings(job_timeout_s=5, visibility_timeout_s=10).visibility_timeout_s == 10


def test_unknown_setting_is_refused():
    with pytest.raises(SettingsError, match="colour"):
        load_settings(colour="blue")
