"""The serving settings (gru_encoder/host/settings.py) and the launcher's checks (gru_encoder/host/serve.py), without a server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gru_encoder.host import serve
from gru_encoder.host.settings import RESOLVED_ENV, ServingSettings, available_cpus, cgroup_cpu_quota
from loadtests.torchserve_process import free_port
from tests import ROOT


def test_environment_overrides_defaults_and_flags_override_the_environment() -> None:
    env = {"GRU_ENCODER_WORKERS": "3", "GRU_ENCODER_MAX_TEXTS": "8", "GRU_ENCODER_BIND": "0.0.0.0", "GRU_ENCODER_PORT": ""}
    s = ServingSettings.from_env(env, max_texts=4)
    assert (s.workers, s.max_texts, s.bind, s.port) == (3, 4, "0.0.0.0", 8080)  # "" = the default
    # The launcher's resolved JSON stands in for the variables (what every worker reads).
    again = ServingSettings.from_env({RESOLVED_ENV: s.to_json(), "GRU_ENCODER_WORKERS": "9"})
    assert again == s
    # A newer launcher's settings reach an older archive's handler: the fields it does not know are left out.
    newer = json.dumps({**json.loads(s.to_json()), "a_setting_added_later": 1})
    assert ServingSettings.from_env({RESOLVED_ENV: newer}) == s


@pytest.mark.parametrize("env,message", [
    ({"GRU_ENCODER_WORKERS": "two"}, "GRU_ENCODER_WORKERS='two': expected a whole number"),
    ({"GRU_ENCODER_MAX_BATCH_DELAY_MS": "0"}, "max_batch_delay_ms=0: must be >= 1 (0 makes TorchServe wait"),
    ({"GRU_ENCODER_WORKERS": "0"}, "workers=0: must be >= 1"),
    ({"GRU_ENCODER_MAX_BODY_BYTES": "10"}, "max_body_bytes=10: must be >= 1024"),
    ({"GRU_ENCODER_BATCH_FILL": "greedy"}, "batch_fill='greedy': one of queued, wait"),
    ({"GRU_ENCODER_BATCH_FILL_AGENT": "/opt/my agents/a.jar"}, "batch_fill_agent='/opt/my agents/a.jar': a path without spaces"),
])
def test_bad_settings_are_refused_with_the_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ServingSettings.from_env(env)


def test_torchserve_gets_workers_batching_timeout_queue_and_one_body_limit() -> None:
    s = ServingSettings(workers=3, batch_size=8, max_batch_delay_ms=5, response_timeout_s=12, job_queue_size=7,
                        max_body_bytes=2048, bind="0.0.0.0", port=9000, model_store="/store")
    props = s.torchserve_properties()
    model = json.loads(props["models"])["gru_encoder"]["1.0"]
    assert (model["minWorkers"], model["maxWorkers"], model["batchSize"], model["maxBatchDelay"], model["responseTimeout"]) == (3, 3, 8, 5, 12)
    assert props["job_queue_size"] == "7" and props["default_response_timeout"] == "12"
    assert props["max_request_size"] == props["max_response_size"] == "2048"
    assert props["inference_address"] == "http://0.0.0.0:9000" and props["management_address"].startswith("http://127.0.0.1:")
    assert props["model_store"] == "/store" and props["load_models"] == "gru_encoder=gru_encoder.mar"


def test_queued_batch_fill_hands_torchserve_the_agent_and_wait_does_not(tmp_path: Path) -> None:
    jar = tmp_path / "agent.jar"
    queued = ServingSettings(batch_fill_agent=str(jar)).torchserve_properties()
    assert ServingSettings().batch_fill == "queued"
    assert queued["vmargs"] == f"-javaagent:{jar}"  # TorchServe's own launcher puts vmargs on the java command line
    wait = ServingSettings(batch_fill="wait", batch_fill_agent=str(jar)).torchserve_properties()
    assert "vmargs" not in wait and {k: v for k, v in queued.items() if k != "vmargs"} == wait


def test_a_missing_batch_fill_agent_says_how_to_build_it(tmp_path: Path) -> None:
    (tmp_path / "gru_encoder.mar").write_bytes(b"")
    ports = [f"--{name}={free_port()}" for name in ("port", "management-port", "metrics-port", "grpc-port", "grpc-management-port")]
    result = subprocess.run([sys.executable, "-m", "gru_encoder.host.serve", "--model-store", str(tmp_path), *ports,
                             "--batch-fill-agent", str(tmp_path / "missing.jar")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"gru-encoder-serve: {tmp_path / 'missing.jar'} not found: batch_fill=queued needs the batch-fill agent; "
        f"build it with make java (a JDK 17), pass --batch-fill-agent PATH, or serve with --batch-fill wait")


def test_threads_follow_the_cgroup_quota_not_the_host(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("250000 100000\n")  # docker run --cpus 2.5
    assert cgroup_cpu_quota(tmp_path) == 3
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1) == 1
    assert available_cpus(v1) == 1  # capped by the quota whatever the host has
    s = ServingSettings(workers=2)
    assert s.threads_per_worker(cpus=64) == 32 and s.threads_per_worker(cpus=2) == 1 and s.threads_per_worker(cpus=1) == 1
    assert ServingSettings(workers=2, torch_threads=3).threads_per_worker(cpus=64) == 3


def test_rendered_config_is_the_committed_file_plus_the_settings() -> None:
    text = serve.render_config(ServingSettings(ts_config=str(ROOT / "config.properties"), port=9123))
    props = serve.read_properties_text(text)
    fixed = serve.read_properties(ROOT / "config.properties")
    assert {k: props[k] for k in fixed} == fixed
    assert props["inference_address"] == "http://127.0.0.1:9123"


def test_a_key_in_both_places_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.properties").write_text((ROOT / "config.properties").read_text() + "job_queue_size=5\n")
    with pytest.raises(serve.LaunchError, match="sets job_queue_size, which come from the serving settings"):
        serve.render_config(ServingSettings(ts_config=str(tmp_path / "config.properties")))


def test_a_taken_port_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    (tmp_path / "gru_encoder.mar").write_bytes(b"")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "gru_encoder.host.serve", "--port", str(port), "--model-store", str(tmp_path)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"gru-encoder-serve: 127.0.0.1:{port} (port) is already taken, perhaps by another TorchServe or make serve: "
        f"stop it, or choose another with --port or GRU_ENCODER_PORT (make serve PORT=...)"
    )
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr


def test_a_missing_archive_says_how_to_build_it(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "gru_encoder.host.serve", "--model-store", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "gru_encoder.mar not found: build it with make archive" in result.stderr
