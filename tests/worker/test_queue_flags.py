"""Queue command flags: settings from flags over ORCD_*, GPU pinning."""

from __future__ import annotations

import pytest

from worker.cli import build_parser
from worker.commands.queue_flags import pin_gpu, settings_from_args
from worker.errors import SettingsError


def test_flags_override_the_environment_and_unset_flags_do_not(monkeypatch):
    monkeypatch.setenv("ORCD_BACKEND", "numpy")
    monkeypatch.setenv("ORCD_MAX_BATCH", "3")
    args = build_parser(["generate"]).parse_args(["generate", "x", "--max-batch", "5", "--queue", "q"])
    settings = settings_from_args(args)
    assert (settings.backend, settings.max_batch, settings.queue_name) == ("numpy", 5, "q")


def test_pin_gpu_sets_or_indexes_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert pin_gpu(1) == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert pin_gpu(1) == "6"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    with pytest.raises(SettingsError, match="gpu 2 .* is not among CUDA_VISIBLE_DEVICES=4,6"):
        pin_gpu(2)


def test_worker_metrics_port_flag_env_and_default(monkeypatch):
    monkeypatch.delenv("ORCD_METRICS_PORT", raising=False)
    parse = build_parser(["worker"]).parse_args
    assert settings_from_args(parse(["worker"])).metrics_port == 0
    monkeypatch.setenv("ORCD_METRICS_PORT", "9101")
    assert settings_from_args(parse(["worker"])).metrics_port == 9101
    assert settings_from_args(parse(["worker", "--metrics-port", "9102"])).metrics_port == 9102
    with pytest.raises(SettingsError, match=r"metrics_port \(ORCD_METRICS_PORT\): Input should be less"):
        settings_from_args(parse(["worker", "--metrics-port", "70000"]))
