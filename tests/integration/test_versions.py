"""Model versions on a real TorchServe behind make serve's local gateway: `gru-encoder models` adds a second
version beside the first, pinned requests reach it, promote is gated on held-out BLEU, rollback and retire
work, every refusal leaves serving as it was, and a restart brings back the same versions and default.

1.0 is the shipped run (runs/default, held-out BLEU 30.29), 2.0 the smoke run (seconds of training, BLEU
near 0): a real pair whose quality gate refuses the promotion.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import openai
import pytest
import requests

from gru_encoder.host import models_cli, traffic, versions
from gru_encoder.client import EncoderClient
from loadtests.torchserve_process import TorchServe
from tests import ROOT
from training.archive import ArchiveConfig, build_archive

pytestmark = pytest.mark.slow
BODY = {"texts": ["i am cold ."], "return": ["hidden"]}
TEXTS = ["i am cold .", "He is very tall and she is not, I think.", "zorblax quux!"]


def sha(run: Path) -> str:
    return versions.describe_run(run, "x", "x", None).weights_sha256  # type: ignore[return-value]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("versions_store")
    build_archive(ArchiveConfig(run_dir=str(ROOT / "runs" / "default"), export_path=str(store)))
    ts = TorchServe(store, tmp_path_factory.mktemp("versions_ts"), gateway="local", workers=1).start()
    yield ts
    ts.stop()


def cli(ts: TorchServe, *argv: str) -> int:
    return models_cli.main(["models", "--settings", "/nonexistent", "--management-url", ts.management_url,
                            "--inference-url", ts.torchserve_url, "--model-store", ts.settings.model_store,
                            "--gateway-status", str(Path(ts.settings.log_dir) / "gateway" / "status.sock"),
                            "--metrics-url", f"http://127.0.0.1:{ts.ports['metrics']}/metrics", *argv])


def serving(ts: TorchServe) -> tuple:
    """What is served: TorchServe's versions and default, the state file, the store's files."""
    management = models_cli.Management(ts.management_url)
    state = versions.state_path(ts.settings.model_store)
    return (sorted(management.registered()), management.default(), state.read_bytes() if state.exists() else None,
            sorted(p.name for p in Path(ts.settings.model_store).iterdir() if p.name != ".versions.json.lock"))


def answered_by(ts: TorchServe, path: str = "/predictions/gru_encoder") -> tuple[str, str, str]:
    r = requests.post(ts.url + path, json=BODY, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["model"]["version"], r.json()["model"]["weights_sha256"], r.headers["X-Model-Version"]


def test_add_serves_a_second_version_beside_the_first(served: TorchServe, smoke_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(served, "add", str(smoke_run), "--version", "2.0", "--workers", "1") == 0, capsys.readouterr().err
    default_sha = sha(ROOT / "runs" / "default")
    assert answered_by(served) == ("1.0", default_sha, "1.0")
    assert answered_by(served, "/predictions/gru_encoder/2.0") == ("2.0", sha(smoke_run), "2.0")
    assert answered_by(served, "/predictions/gru_encoder/1.0") == ("1.0", default_sha, "1.0")
    client = EncoderClient(served.url, version="2.0")
    assert client.encode(["i am cold ."], return_=["hidden"]).model["version"] == "2.0" and client.last_version == "2.0"
    info = requests.get(served.url + "/info", timeout=10).json()
    assert info["default_version"] == "1.0"
    assert [(v["version"], v["weights_sha256"], v["test_bleu"]) for v in info["versions"]] == [
        ("1.0", default_sha, 30.29), ("2.0", sha(smoke_run), 0.0)]
    ids = [m["id"] for m in requests.get(served.url + "/v1/models", timeout=10).json()["data"]]
    assert ids == ["gru_encoder", "gru_encoder@1.0", "gru_encoder@2.0"]
    # /v1/embeddings: the model id pins the version (the gateway routes by the body's model).
    native = {v: np.asarray(requests.post(f"{served.url}/predictions/gru_encoder/{v}", json={"texts": TEXTS, "return": ["hidden"]},
                                          timeout=30).json()["hidden"], np.float32)[-1] for v in ("1.0", "2.0")}
    for model, version in (("gru_encoder@2.0", "2.0"), ("gru_encoder@1.0", "1.0"), ("gru_encoder", "1.0")):
        r = requests.post(served.url + "/v1/embeddings", json={"input": TEXTS, "model": model}, timeout=30)
        assert r.status_code == 200 and r.json()["model"] == model, r.text[:300]
        vectors = np.asarray([d["embedding"] for d in r.json()["data"]], np.float32)
        assert vectors.shape == native[version].shape and np.abs(vectors - native[version]).max() <= 1e-5, model
    r = requests.post(served.url + "/v1/embeddings", json={"input": "hi", "model": "gru_encoder@3.0"}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found" and r.json()["error"]["param"] == "model", r.text
    assert "gru_encoder@3.0 is not served here: GET /v1/models lists the served ids" in r.json()["error"]["message"]
    # A body the gateway writes to a file (past its 128 KB buffer) is not read for its model: the default refuses another
    # version's id.
    padded = b'{"input": "hi", "model": "gru_encoder@2.0"' + b" " * 500_000 + b"}"
    r = requests.post(served.url + "/v1/embeddings", data=padded, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 422 and "POST /predictions/gru_encoder/2.0" in r.json()["error"]["message"], r.text
    got = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0).embeddings.create(model="gru_encoder@2.0", input=TEXTS)
    assert np.abs(np.asarray([d.embedding for d in got.data], np.float32) - native["2.0"]).max() <= 1e-5
    capsys.readouterr()
    assert cli(served, "list") == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[:5] == ["1.0", "*", "100%", default_sha[:16], "30.29"] and rows[1].endswith("1 ready")
    assert rows[2].split()[:4] == ["2.0", "0%", sha(smoke_run)[:16], "0.00"] and len(rows) == 3


def corrupt_copy(run: Path, where: Path) -> Path:
    shutil.copytree(run, where)
    data = bytearray((where / "encoder.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (where / "encoder.safetensors").write_bytes(bytes(data))
    return where


def test_refusals_leave_serving_unchanged(served: TorchServe, smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = serving(served)
    assert before[:2] == (["1.0", "2.0"], "1.0")
    (tmp_path / "empty").mkdir()
    refused = {
        "bad run": (["add", str(tmp_path / "empty"), "--version", "3.0"], "config.json not found"),
        "corrupt weights": (["add", str(corrupt_copy(smoke_run, tmp_path / "corrupt")), "--version", "3.0"], "sha256 mismatch"),
        "duplicate": (["add", str(smoke_run), "--version", "2.0"], "version 2.0 is already served"),
        "retire the default": (["retire", "1.0"], "version 1.0 is the default"),
        "past the cap": (["--max-versions", "2", "add", str(smoke_run), "--version", "3.0"], "retire one first"),
    }
    for name, (argv, message) in refused.items():
        assert cli(served, *argv) == 1, name
        assert message in capsys.readouterr().err, name
        assert serving(served) == before, name
    # A pin to a version that is not served: the project's 404, naming where the versions are listed.
    r = requests.post(served.url + "/predictions/gru_encoder/3.0", json=BODY, timeout=10)
    assert r.status_code == 404 and r.json()["type"] == "not_found" and "version 3.0 is not served" in r.json()["message"]
    assert "GET /info lists the served versions" in r.json()["message"]
    assert requests.post(served.url + "/predictions/gru_encoder/..%2Fmodels", json=BODY, timeout=10).status_code == 404
    # Registration admits only archives of the model store (allowed_urls), never another URL.
    outside = tmp_path / "gru_encoder.mar"
    shutil.copy(Path(served.settings.model_store) / "gru_encoder-2.0.mar", outside)
    for url in (outside.as_uri(), "http://127.0.0.1:9/gru_encoder.mar"):
        r = requests.post(served.management_url + "/models", params={"url": url, "model_name": "evil"}, timeout=30)
        assert 400 <= r.status_code < 500 and "allowed URL" in r.text, r.text
    assert serving(served) == before
    # The management API is not reachable through the gateway.
    assert requests.get(served.url + "/models", timeout=10).status_code == 404


def versions_seen(ts: TorchServe, callers: list[str], path: str = "/predictions/gru_encoder") -> dict[str, str]:
    """The version that answered each caller (X-Caller-ID), unpinned."""
    seen = {}
    with requests.Session() as session:
        for caller in callers:
            body = BODY if path.startswith("/predictions") else {"input": "i am cold .", "model": "gru_encoder"}
            r = session.post(ts.url + path, json=body, headers={"X-Caller-ID": caller}, timeout=30)
            assert r.status_code == 200, r.text
            seen[caller] = r.headers["X-Model-Version"]
    return seen


def test_a_canary_sends_its_share_of_unpinned_callers_each_always_to_the_same_version(
        served: TorchServe, capsys: pytest.CaptureFixture) -> None:
    callers = [f"caller-{i:04d}" for i in range(300)]
    assert cli(served, "canary", "2.0", "--percent", "30") == 0
    first = versions_seen(served, callers)
    assert versions_seen(served, callers) == first, "a caller stays on its version"
    assert versions_seen(served, callers[:40], "/v1/embeddings") == {c: first[c] for c in callers[:40]}, "one split for both routes"
    share = 100 * sum(v == "2.0" for v in first.values()) / len(callers)
    assert set(first.values()) == {"1.0", "2.0"} and abs(share - 30) <= 8, share  # 300 callers: 3 standard deviations
    assert answered_by(served, "/predictions/gru_encoder/1.0")[0] == "1.0", "pinned callers are never moved"
    info = requests.get(served.url + "/info", timeout=10).json()
    assert info["canary"] == {"version": "2.0", "percent": 30.0} and info["default_version"] == "1.0"
    assert [v["unpinned_percent"] for v in info["versions"]] == [70.0, 30.0]
    for bad in ("two words", "x" * 129, "caf\u00e9"):  # never split quietly by address instead
        r = requests.post(served.url + "/predictions/gru_encoder", json=BODY, headers={"X-Caller-ID": bad.encode()}, timeout=10)
        assert r.status_code == 400 and r.json()["field"] == "X-Caller-ID", r.text
    assert cli(served, "canary", "2.0", "--percent", "0") == 0
    assert set(versions_seen(served, callers[:50]).values()) == {"1.0"}


def test_promote_is_gated_then_forced_and_rolled_back(served: TorchServe, smoke_run: Path, capsys: pytest.CaptureFixture) -> None:
    before = serving(served)
    assert cli(served, "promote", "2.0") == 1
    assert "held-out BLEU 0.00 is 30.29 below the default 1.0's 30.29" in capsys.readouterr().err
    assert serving(served) == before and answered_by(served)[0] == "1.0"
    assert cli(served, "promote", "2.0", "--force") == 0
    assert answered_by(served) == ("2.0", sha(smoke_run), "2.0")
    assert requests.get(served.url + "/info", timeout=10).json()["default_version"] == "2.0"
    assert cli(served, "rollback") == 0 and answered_by(served)[0] == "1.0"
    assert cli(served, "promote", "2.0", "--force") == 0 and answered_by(served)[0] == "2.0"


def test_a_restart_brings_back_the_versions_and_the_default(served: TorchServe, smoke_run: Path) -> None:
    before = serving(served)
    assert before[:2] == (["1.0", "2.0"], "2.0")
    served.stop()
    started = time.monotonic()
    served.start()
    # The gateway opens only once the state's default is TorchServe's: the first answer is already 2.0's.
    assert answered_by(served) == ("2.0", sha(smoke_run), "2.0"), f"after {time.monotonic() - started:.1f} s"
    assert serving(served) == before
    assert answered_by(served, "/predictions/gru_encoder/1.0")[0] == "1.0"


def test_rollback_then_retire(served: TorchServe, capsys: pytest.CaptureFixture) -> None:
    assert cli(served, "retire", "2.0") == 1 and "is the default" in capsys.readouterr().err
    assert cli(served, "rollback") == 0 and answered_by(served)[0] == "1.0"
    answered_by(served, "/predictions/gru_encoder/2.0")  # a caller that pins 2.0
    deadline = time.monotonic() + 15  # the workers' metrics reach the frontend's /metrics within a second or so
    while traffic.last_pinned(traffic.fetch(f"http://127.0.0.1:{served.ports['metrics']}/metrics"), "2.0") is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert cli(served, "retire", "2.0") == 1
    assert "version 2.0 answered a request pinned to it" in capsys.readouterr().err and serving(served)[:2] == (["1.0", "2.0"], "1.0")
    assert cli(served, "retire", "2.0", "--force") == 0
    assert serving(served)[:2] == (["1.0"], "1.0") and "gru_encoder-2.0.mar" not in serving(served)[3]
    r = requests.post(served.url + "/predictions/gru_encoder/2.0", json=BODY, timeout=10)
    assert r.status_code == 404 and r.json()["type"] == "not_found"
    assert versions.load(served.settings.model_store).names() == ["1.0"]


def test_replicas_that_follow_the_state_take_a_built_archive(served: TorchServe, smoke_run: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    """The Kubernetes way (docs/SCALING.md): an archive built elsewhere, the state written to the store, every replica
    behind a name (here the one TorchServe) registering it itself and checked directly before add reports success."""
    mar = build_archive(ArchiveConfig(run_dir=str(smoke_run), export_path=str(tmp_path), version="3.0"))
    replicas = ("--replicas-dns", served.torchserve_url.removeprefix("http://"))
    assert cli(served, *replicas, "add", str(mar), "--version", "4.0") == 1
    assert f"{mar} is version 3.0 of gru_encoder, not 4.0" in capsys.readouterr().err
    assert cli(served, *replicas, "add", str(mar), "--version", "3.0") == 0
    assert "version 3.0 is served by 1 replicas" in capsys.readouterr().out
    assert answered_by(served, "/predictions/gru_encoder/3.0") == ("3.0", sha(smoke_run), "3.0")
    entry = versions.load(served.settings.model_store).require("3.0")
    assert entry.run_dir == str(mar.resolve()) and entry.weights_sha256 == sha(smoke_run)
    assert cli(served, *replicas, "canary", "3.0", "--percent", "100") == 0
    assert set(versions_seen(served, ["a", "b", "c"]).values()) == {"3.0"}
    assert cli(served, *replicas, "canary", "3.0", "--percent", "0") == 0 and cli(served, *replicas, "retire", "3.0") == 1
    assert "or --force" in capsys.readouterr().err  # no metrics on the replicas' default metrics port here
    assert cli(served, *replicas, "retire", "3.0", "--force") == 0
    deadline = time.monotonic() + 60
    while "3.0" in models_cli.Management(served.management_url).registered():  # the launcher's reconciler unregisters it
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert serving(served)[:2] == (["1.0"], "1.0")


def test_a_replica_follows_a_state_written_elsewhere(served: TorchServe, smoke_run: Path) -> None:
    """What each compose or Kubernetes replica does: versions.json changed by another machine's gru-encoder
    models (the store they share) is applied by the launcher's reconciler, with nobody calling this TorchServe."""
    store = Path(served.settings.model_store)
    build_archive(ArchiveConfig(run_dir=str(smoke_run), export_path=str(store), version="3.0"))
    state = versions.load(store)
    versions.save(store, state.with_version(versions.describe_run(smoke_run, "3.0", "gru_encoder-3.0.mar", 1)))
    deadline = time.monotonic() + 120
    while requests.post(served.url + "/predictions/gru_encoder/3.0", json=BODY, timeout=30).status_code != 200:
        assert time.monotonic() < deadline, served.output()[-2000:]
        time.sleep(0.5)
    assert answered_by(served, "/predictions/gru_encoder/3.0") == ("3.0", sha(smoke_run), "3.0")
    assert "gru-encoder reconcile: generation" in served.output() and "registered 3.0" in served.output()
    versions.save(store, versions.load(store).without("3.0"))
    while "3.0" in models_cli.Management(served.management_url).registered():
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert serving(served)[:2] == (["1.0"], "1.0")
