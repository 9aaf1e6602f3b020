"""The device check (loadtests/device_check.py) run on the CPU, as `make device-check` runs it on a GPU: its
answers equal the in-process encoder's, its JSON holds every figure, and what a GPU machine needs for it
(the wheels, the one-line command in docs/GPU.md) is what the check really imports and runs."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gru_encoder.core.artifacts import load_encoder
from loadtests import device_check
from loadtests.device_check import DeviceCheckConfig, recommend

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "runs" / "default"
SIZES = [1, 4, 16]
# What the GPU machine has (Python 3.12, torch and these), besides what their own requirements bring.
DEVICE_HAS = {"torch", "numpy", "safetensors", "psutil", "requests"}


@pytest.fixture(scope="module")
def device_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One CPU run of the command line, in a fresh interpreter (what it imports is then its own), in seconds."""
    out = tmp_path_factory.mktemp("device_check")
    cmd = [sys.executable, "-m", "loadtests.device_check", "--device", "cpu", "--run-dir", str(RUN), "--out", str(out),
           "--batch-sizes", ",".join(map(str, SIZES)), "--correctness-requests", "16", "--seconds-per-cell", "0.02",
           "--min-repeats", "2", "--max-repeats", "4", "--torch-threads", "1", "--no-chart"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "correctness: ok" in proc.stdout
    return out, json.loads((out / "results.json").read_text())


def test_correctness_part_passes_and_says_what_it_compared(device_run: tuple[Path, dict]) -> None:
    c = device_run[1]["correctness"]
    assert c["ok"] and not c["problems"]
    assert c["shapes_equal"] and c["ids_tokens_lengths_equal"] and c["padding_exactly_zero"] and c["json_equals_npz"]
    assert c["max_abs_diff"] == {"output": 0.0, "hidden": 0.0}  # the CPU against the CPU: the same bits
    assert c["tolerance"] == DeviceCheckConfig.tolerance
    assert c["requests"] == 16 + 4 and c["texts"] > c["requests"] and c["tokens"] > c["texts"]


def test_answers_equal_the_in_process_encoder(device_run: tuple[Path, dict]) -> None:
    """The check's answers, text by text, against the model called directly with the same ids, lengths and h0
    (in one batch of another composition: within the service's 1e-5 for batching)."""
    a = np.load(device_run[0] / "answers.npz")
    ids, lengths = torch.from_numpy(a["ids"]), torch.from_numpy(a["lengths"])
    assert not any(a["ids"][i, n:].any() for i, n in enumerate(a["lengths"]))
    encoder = load_encoder(RUN).encoder
    with torch.inference_mode():
        output, hidden = encoder(ids, lengths, torch.from_numpy(a["h0"]))  # (N, T, D*H), (L*D, N, H)
    np.testing.assert_allclose(a["hidden"], hidden.numpy(), rtol=0, atol=1e-5)
    want = np.concatenate([output[i, :n].numpy() for i, n in enumerate(a["lengths"]) if a["has_output"][i]])
    np.testing.assert_allclose(a["output_packed"], want, rtol=0, atol=1e-5)
    assert a["h0"].any() and a["has_output"].any() and not a["has_output"].all()  # the h0 and hidden-only cases are in


def test_json_holds_every_figure(device_run: tuple[Path, dict]) -> None:
    results = device_run[1]
    assert [r["batch_size"] for r in results["batches"]] == SIZES
    for row in results["batches"]:
        assert row["requests"] >= 1 and row["tokens"] >= row["batch_size"]
        for path in device_check.PATHS:
            cell = row[path]
            assert set(cell["ms"]) == {"median", "min", "max", "n"} and cell["ms"]["n"] >= 2
            assert cell["ms"]["min"] <= cell["ms"]["median"] <= cell["ms"]["max"] and cell["texts_per_s"] > 0
        for fmt in ("json", "npz"):
            assert set(row[fmt]["stages_ms"]) == {"parse", "tokenize", "forward", "serialize"}
            assert row[fmt]["response_bytes"] > 0 and row[fmt]["errors"] == {}
        assert row["memory"]["rss_bytes"] > 0 and row["memory"]["peak_allocated_bytes"] is None and row["memory"]["note"]
    rec = results["recommendation"]
    assert rec["texts_per_batch"] in SIZES and rec["torchserve_batch_size"] >= 1 and 1 <= rec["workers"] <= DeviceCheckConfig.pod_cpus
    assert rec["texts_per_s_estimate"] > 0 and rec["rule"] and "CPU" in rec["note"]
    assert results["memory"]["weights_bytes"] > 0
    assert results["workload"]["texts_per_request"] > 1
    assert results["environment"]["device"] == "cpu" and results["config"]["batch_sizes"] == "1,4,16"
    assert results["torchserve"] == {"ran": False, "reason": "not asked for (--torchserve)"}
    assert results["chart"] == {"skipped": "--no-chart"}


def test_replot_draws_the_chart(device_run: tuple[Path, dict]) -> None:
    out = device_run[0]
    assert device_check.main(["--replot", str(out / "results.json")]) == 0
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def distributions_of(requirements: set[str]) -> set[str]:
    """The distributions and everything they require, transitively, as installed here (names normalized)."""
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    seen, todo = set(), [norm(r) for r in requirements]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [norm(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]) for r in requires if "extra ==" not in r]
    return seen


def script_wheels() -> dict[str, str]:
    text = (ROOT / "scripts" / "device-wheels.sh").read_text()
    block = text.split("WHEELS=(\n", 1)[1].split("\n)\n", 1)[0]
    return dict(re.findall(r"^\s*([A-Za-z0-9_.-]+)==(\S+)", block, re.M))


def test_it_imports_only_what_a_gpu_machine_has_or_gets_as_wheels(device_run: tuple[Path, dict]) -> None:
    modules = device_run[1]["environment"]["third_party_modules"]
    assert {"torch", "pydantic", "orjson"} <= set(modules)
    owners = metadata.packages_distributions()
    allowed = distributions_of(DEVICE_HAS) | distributions_of(set(script_wheels()))
    missing = {m: owners.get(m) for m in modules if not {re.sub(r"[-_.]+", "-", d).lower() for d in owners.get(m, [])} & allowed}
    assert not missing, f"imported, but neither on the GPU machine nor in scripts/device-wheels.sh: {missing}"


def test_the_wheels_are_the_versions_this_venv_runs() -> None:
    wheels = script_wheels()
    assert {"pydantic", "pydantic-core", "orjson"} <= set(wheels)
    assert {name: metadata.version(name) for name in wheels} == wheels


def device_command() -> str:
    line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("DEVICE_COMMAND :="))
    return line.split(":=", 1)[1].strip().replace("$$", "$")


def test_the_device_command_is_in_the_docs_as_the_makefile_has_it() -> None:
    command = device_command()
    assert len(command) < 2000  # the device tool's limit for one command
    assert command.startswith("python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && ")
    assert "python3 -m loadtests.device_check --device cuda" in command and '"$OUT/' in command
    assert command in (ROOT / "docs" / "GPU.md").read_text()


def test_pod_cpus_is_the_gpu_overlays_cpu_request() -> None:
    patch = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "overlays" / "gpu" / "torchserve-gpu.yaml").read_text())
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert str(DeviceCheckConfig.pod_cpus) == str(container["resources"]["requests"]["cpu"])


def row(n: int, model_ms: float, whole_ms: float, reserved: int = 0) -> dict:
    return {"batch_size": n, "model": {"ms": {"median": model_ms}}, "json": {"ms": {"median": whole_ms}},
            "memory": {"peak_reserved_bytes": reserved}}


def test_recommendation_keeps_the_gpu_busy_within_the_budget_cpus_and_memory() -> None:
    cfg = DeviceCheckConfig(latency_budget_ms=50, pod_cpus=4)
    # The device's share falls with the batch size; 1024 texts take too long for the budget.
    rows = [row(1, 0.5, 1.0), row(64, 1.0, 5.0), row(256, 2.0, 20.0), row(1024, 6.0, 80.0)]
    rec = recommend(rows, cfg, 4.0, None)
    # 64: min(4 * 64 / 5, 64 / 1) = 51.2 texts/ms; 256: min(4 * 256 / 20, 256 / 2) = 51.2: the smaller wins.
    assert (rec["texts_per_batch"], rec["workers"], rec["torchserve_batch_size"]) == (64, 4, 16)
    assert rec["texts_per_s_estimate"] == pytest.approx(51_200)
    # A GPU whose memory holds only two workers at that batch.
    gib = 2**30
    rec = recommend([row(64, 1.0, 5.0, reserved=3 * gib)], cfg, 4.0, {"total_bytes": 10 * gib, "context_bytes": gib})
    assert (rec["workers"], rec["workers_by_memory"]) == (2, 2)  # 90% of 10 GiB / (1 + 3 GiB a worker)
    assert "note" not in rec


def test_torchserve_step_says_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(device_check.shutil, "which", lambda name: None)
    result = device_check.torchserve_step(DeviceCheckConfig(torchserve=True), {}, tmp_path)
    assert result["ran"] is False and "java" in result["reason"] and "docs/GPU.md" in result["reason"]


def test_cudnn_rnn_precision_is_set_inside_and_restored() -> None:
    before = device_check.rnn_precision()
    with device_check.cudnn_rnn_precision("ieee"):
        assert device_check.rnn_precision() == "ieee"
    assert device_check.rnn_precision() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: docs/GPU.md says how to run it on one")
def test_on_this_machines_gpu(tmp_path: Path) -> None:
    """Where make check runs on a GPU host: the check on CUDA, a short ladder, its correctness part."""
    results = device_check.run(DeviceCheckConfig(device="cuda", run_dir=str(RUN), out=str(tmp_path), batch_sizes="1,64",
                                                 seconds_per_cell=0.05, chart=False))
    assert results["correctness"]["ok"], results["correctness"]["problems"]
    assert results["batches"][-1]["memory"]["peak_reserved_bytes"] > 0 and results["memory"]["context_bytes"] > 0


def test_bad_settings_are_refused_with_the_flag_to_fix() -> None:
    with pytest.raises(ValueError, match="--batch-sizes"):
        DeviceCheckConfig(batch_sizes="0,4")
    with pytest.raises(ValueError, match="--min-repeats"):
        DeviceCheckConfig(min_repeats=0)
