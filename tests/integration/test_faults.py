"""Faults against a real TorchServe (reliability/faults.py): killed workers, a restart, broken weights.

Each test starts its own TorchServe on free ports (never the session-shared `server`, which other tests
rely on staying healthy). Assertions are about behaviour, not this machine's speed: which requests may
fail and how, that nothing hangs past responseTimeout, that the service comes back by itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gru_encoder.host.settings import ServingSettings
from gru_encoder.core.artifacts import ArtifactError, load_encoder, sha256_file
from reliability.faults import FaultsConfig, kill_workers, response_timeout_s, restart, serve_broken
from reliability.common import Server

pytestmark = pytest.mark.slow
SETTINGS = ServingSettings()  # what the fault scripts start TorchServe with
# Short phases; after_s leaves room for a new worker to load (a few seconds here) with margin for noise.
KILL = FaultsConfig(users=8, before_s=2.0, after_s=12.0, client_timeout_s=45.0, broken_deadline_s=90.0)


@pytest.fixture(scope="module")
def own_server(smoke_mar: Path, tmp_path_factory: pytest.TempPathFactory):
    """A TorchServe of this module's own: its workers get killed and it gets restarted."""
    ts = Server(smoke_mar, tmp_path_factory.mktemp("faults_ts")).start()
    yield ts
    ts.stop()


def assert_only_killed_batches_failed(r: dict, killed: int) -> None:
    """The requests that fail are the ones in flight on a killed worker, answered at once with TorchServe's
    'Worker died.' (500 or 507); nothing else fails, nothing goes unanswered, nothing waits past the timeout."""
    assert r["workers_killed"] == killed and len(r["new_worker_pids"]) == killed, r
    assert r["recovery_s"] is not None and r["workers_ready_again_s"] is not None, r
    for kind in r["failures"]:
        assert kind.split(":")[0] in ("500", "507") and "Worker died." in kind, r["failures"]
    assert r["failed"] <= killed * SETTINGS.batch_size, r
    assert r["no_http_answer"] == 0 and r["failed_after_workers_back"] == 0, r
    assert r["max_latency_s"] < response_timeout_s(), r
    assert r["ok"] > 0


def test_killing_one_worker_under_load_costs_only_its_batch(own_server: Server, tmp_path: Path) -> None:
    r = kill_workers(own_server, "one", KILL, tmp_path)
    print(r)
    assert_only_killed_batches_failed(r, killed=1)
    # The surviving worker kept serving while the killed one was being replaced.
    assert r["recovery_s"] < r["workers_ready_again_s"], r


def test_killing_every_worker_under_load_recovers_by_itself(own_server: Server, tmp_path: Path) -> None:
    r = kill_workers(own_server, "all", KILL, tmp_path)
    print(r)
    assert_only_killed_batches_failed(r, killed=SETTINGS.workers)


def test_restart_serves_the_same_model_from_the_store(own_server: Server) -> None:
    r = restart(own_server)
    print(r)
    assert r["loaded_at_startup"] is True and r["workers_ready"] == SETTINGS.workers, r
    assert r["identical_tensors"] and r["new_workers"], r


@pytest.mark.parametrize("kind,phrases", [
    ("corrupt", ["sha256 mismatch for", "encoder.safetensors", "make archive"]),
    ("mismatch", ["weights do not fit the encoder", "embedding.weight: file [", "come from different runs", "make archive"]),
])
def test_broken_weights_never_serve_and_the_log_says_why(smoke_mar: Path, tmp_path: Path, kind: str, phrases: list[str]) -> None:
    r = serve_broken(smoke_mar / "gru_encoder.mar", kind, tmp_path, KILL)
    print(json.dumps(r, indent=1))
    assert not r["any_200"], r
    assert r["message"] is not None, f"no ArtifactError in TorchServe's log within {KILL.broken_deadline_s}s"
    assert all(p in r["message"] for p in phrases), r["message"]
    # What a client gets meanwhile: refused (frontend starting), TorchServe's 'Worker died.', or no answer
    # in time (queued until the next, failing, worker start); never a 200, never a 4xx blaming the request.
    for answer in r["predictions"]:
        status = int(answer.split(":")[0])
        assert answer in ("0: ConnectionError", "0: ReadTimeout") or (status >= 500 and "Worker died." in answer), r["predictions"]
    assert set(r["predictions"]) != {"0: ConnectionError"}, "no request reached the started frontend"


# ---------------------------------------------------------------- the loader's messages, in-process


@pytest.fixture
def run_copy(smoke_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(smoke_run, tmp_path / "run"))


def _rehash(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    config["files"]["weights"]["sha256"] = sha256_file(run / "encoder.safetensors")
    (run / "config.json").write_text(json.dumps(config))


def test_nan_weights_with_a_matching_hash_are_refused(run_copy: Path) -> None:
    state = load_file(run_copy / "encoder.safetensors")
    state["gru.weight_hh_l0"][0, 0] = float("nan")
    save_file(state, run_copy / "encoder.safetensors")
    _rehash(run_copy)
    with pytest.raises(ArtifactError, match="NaN or infinite values in gru.weight_hh_l0.*re-train"):
        load_encoder(run_copy)


def test_unreadable_weights_with_a_matching_hash_say_so_on_one_line(run_copy: Path) -> None:
    path = run_copy / "encoder.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    _rehash(run_copy)
    with pytest.raises(ArtifactError, match="not a readable safetensors file") as e:
        load_encoder(run_copy)
    assert "\n" not in str(e.value) and "make archive" in str(e.value)


def test_wrong_shape_weights_name_the_tensors_on_one_line(run_copy: Path) -> None:
    state = load_file(run_copy / "encoder.safetensors")
    state["embedding.weight"] = torch.zeros(3, 5)
    del state["gru.bias_hh_l0"]
    save_file(state, run_copy / "encoder.safetensors")
    _rehash(run_copy)
    with pytest.raises(ArtifactError, match=r"embedding.weight: file \[3, 5\].*gru.bias_hh_l0: missing") as e:
        load_encoder(run_copy)
    assert "\n" not in str(e.value)
