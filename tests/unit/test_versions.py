"""Model versions without a server: names, the state file, what the launcher renders from it, versioned
archives, the handler's /info and /v1/models, the client's pinned route, and `gru-encoder models`
against a fake management API (every refusal leaves the state, the store and the calls untouched)."""

from __future__ import annotations

import json
from dataclasses import replace
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gru_encoder.client import EncoderClient
from gru_encoder.host import models_cli, versions
from gru_encoder.host.models_cli import Context, expected_answer
from gru_encoder.host.settings import ServingSettings
from gru_encoder.host.versions import State, Version, VersionError
from handlers.encoder_handler import GruEncoderHandler
from tests.fakes import FakeContext
from training.archive import ArchiveConfig, build_archive


@pytest.mark.parametrize("name", ["1.0", "2", "v2.1-rc_3", "a" * 32, "2026-12-06"])
def test_version_names_that_are_taken(name: str) -> None:
    assert versions.check_version(name) == name


@pytest.mark.parametrize("name", ["", ".1", "-x", "a" * 33, "2.0/..", "2 0", "ü", "1.0\n", "../x", "%2e"])
def test_version_names_that_are_refused_say_what_a_name_is(name: str) -> None:
    with pytest.raises(VersionError, match="1-32 characters of A-Z a-z 0-9 . _ -"):
        versions.check_version(name)


def test_archive_names() -> None:
    assert versions.mar_name("1.0") == "gru_encoder.mar" and versions.mar_name("1.0", "other.mar") == "other.mar"
    assert versions.mar_name("2.0") == "gru_encoder-2.0.mar"


def entry(version: str, bleu: float | None = 10.0, mar: str | None = None) -> Version:
    return Version(version, mar or versions.mar_name(version), 1, "ab" * 32, {} if bleu is None else {"test_bleu": bleu})


def test_no_state_file_is_version_1_0_of_the_settings_archive(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "gru_encoder.mar", "w") as z:
        z.writestr("config.json", json.dumps({"files": {"weights": {"sha256": "cd" * 32}}}))
        z.writestr("metrics.json", json.dumps({"test_bleu": 30.29}))
    state = versions.load(tmp_path)
    assert not state.saved and state.default == "1.0" and state.names() == ["1.0"]
    first = state.versions[0]
    assert first.mar == "gru_encoder.mar" and first.weights_sha256 == "cd" * 32 and first.bleu == 30.29 and first.trained_at
    assert versions.load(tmp_path / "empty").versions[0].weights_sha256 is None  # no archive yet: the launcher says so


def test_the_state_file_round_trips_and_is_replaced_whole(tmp_path: Path) -> None:
    state = State((entry("1.0"), entry("2.0")), "1.0").promoted("2.0")
    saved = versions.save(tmp_path, state)
    path = versions.state_path(tmp_path)
    inode = path.stat().st_ino
    assert versions.load(tmp_path) == saved and saved.previous_defaults == ("1.0",) and saved.generation == state.generation + 1
    again = versions.save(tmp_path, saved.rolled_back())
    assert path.stat().st_ino != inode, "written beside and renamed over, never rewritten in place"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "versions.json"]  # no temporary file left
    assert [p.name for p in (tmp_path / "release").iterdir()] == ["gateway.conf"]
    assert versions.load(tmp_path).default == "1.0" and again.generation == saved.generation + 1


def test_a_canary_is_a_served_version_other_than_the_default_and_ends_with_promote_or_rollback(tmp_path: Path) -> None:
    state = State((entry("1.0"), entry("2.0"), entry("3.0")), "1.0")
    canary = state.with_canary("2.0", 25)
    assert canary.canary == versions.Canary("2.0", 25.0)
    assert [canary.canary_percent(v) for v in ("1.0", "2.0", "3.0")] == [75.0, 25.0, 0.0]
    assert canary.with_canary("2.0", 0).canary is None and canary.with_canary("3.0", 2.5).canary == versions.Canary("3.0", 2.5)
    for bad, message in [(("1.0", 10), "is the default"), (("9", 10), "is not served"), (("2.0", 101), "from 0"),
                         (("2.0", -1), "from 0"), (("2.0", 2.555), "at most two decimals")]:
        with pytest.raises(VersionError, match=message):
            canary.with_canary(*bad)
    with pytest.raises(VersionError, match=r"is the canary \(25% of unpinned callers\): end the canary first"):
        canary.without("2.0")
    assert canary.promoted("2.0").canary is None and canary.promoted("2.0").default == "2.0"
    assert canary.promoted("3.0").rolled_back().canary is None
    saved = versions.save(tmp_path, canary)
    assert versions.load(tmp_path).canary == versions.Canary("2.0", 25.0)
    release = versions.release_path(tmp_path).read_text()
    assert 'split_clients "$gw_caller" $gw_unpinned_version {\n    25% "2.0";\n    * "1.0";\n}' in release
    assert f'map "" $gw_release_generation {{\n    default "{saved.generation}";' in release
    assert versions.summary(versions.load(tmp_path))["canary"] == {"version": "2.0", "percent": 25.0}


@pytest.mark.parametrize("canary", [{"version": "1.0", "percent": 5}, {"version": "9", "percent": 5}, {"version": "2.0", "percent": 0}])
def test_a_state_file_with_an_impossible_canary_is_refused(tmp_path: Path, canary: dict) -> None:
    versions.save(tmp_path, State((entry("1.0"), entry("2.0")), "1.0"))
    data = json.loads(versions.state_path(tmp_path).read_text())
    versions.state_path(tmp_path).write_text(json.dumps({**data, "canary": canary}))
    with pytest.raises(VersionError, match="the canary"):
        versions.load(tmp_path)


@pytest.mark.parametrize("text", ["{", '{"format": "other/1"}', '{"format": "gru_encoder.versions/1", "default": "9", "versions": []}'])
def test_an_unreadable_state_file_says_how_to_fix_it(tmp_path: Path, text: str) -> None:
    (tmp_path / "versions.json").write_text(text)
    with pytest.raises(VersionError, match="versions.json"):
        versions.load(tmp_path)


def test_state_changes_and_their_refusals() -> None:
    state = State((entry("1.0"),), "1.0")
    with pytest.raises(VersionError, match="already served"):
        state.with_version(entry("1.0"))
    full = state.with_version(entry("2.0")).with_version(entry("3.0"))
    with pytest.raises(VersionError, match=r"the most at once \(3\): retire one first"):
        full.with_version(entry("4.0"))
    assert versions.MAX_VERSIONS == 3
    with pytest.raises(VersionError, match="is the default: promote another version first"):
        full.without("1.0")
    with pytest.raises(VersionError, match="no earlier default"):
        full.rolled_back()
    moved = full.promoted("2.0").promoted("3.0")
    assert moved.default == "3.0" and moved.previous_defaults == ("1.0", "2.0")
    assert moved.rolled_back().default == "2.0" and moved.rolled_back().rolled_back().default == "1.0"
    # A retired version is no rollback target: the newest earlier default still served is.
    assert moved.without("2.0").rolled_back().default == "1.0"
    with pytest.raises(VersionError, match="not served"):
        full.promoted("9.0")


def test_the_launcher_registers_every_version_with_its_workers_and_marks_the_default(tmp_path: Path) -> None:
    settings = ServingSettings(model_store=str(tmp_path), workers=2)
    alone = settings.torchserve_properties()
    assert alone["load_models"] == "gru_encoder=gru_encoder.mar"
    assert json.loads(alone["models"])["gru_encoder"]["1.0"]["defaultVersion"] is True
    versions.save(tmp_path, State((entry("1.0", mar="gru_encoder.mar"), Version("2.0", "gru_encoder-2.0.mar", None)), "1.0").promoted("2.0"))
    props = settings.torchserve_properties()
    assert props["load_models"] == "gru_encoder=gru_encoder.mar,gru_encoder=gru_encoder-2.0.mar"
    models = json.loads(props["models"])["gru_encoder"]
    assert {v: (m["marName"], m["defaultVersion"], m["minWorkers"], m["maxWorkers"]) for v, m in models.items()} == {
        "1.0": ("gru_encoder.mar", False, 1, 1), "2.0": ("gru_encoder-2.0.mar", True, 2, 2)}  # None: the settings' workers


def test_the_launcher_refuses_a_missing_archive_of_a_version(tmp_path: Path) -> None:
    from gru_encoder.host.serve import LaunchError, check_ready

    shutil.copy(Path(__file__), tmp_path / "gru_encoder.mar")  # any file: check_ready looks only for it
    versions.save(tmp_path, State((entry("1.0", mar="gru_encoder.mar"), entry("2.0")), "1.0"))
    with pytest.raises(LaunchError, match=r"gru_encoder-2.0.mar not found: rebuild it .*--version 2.0.*\(version 2.0\)"):
        check_ready(ServingSettings(model_store=str(tmp_path), batch_fill="wait"))


@pytest.mark.slow
def test_another_version_has_its_own_archive_with_its_version_and_metrics(smoke_run: Path, tmp_path: Path) -> None:
    mar = build_archive(ArchiveConfig(run_dir=str(smoke_run), export_path=str(tmp_path), version="2.0"))
    assert mar == tmp_path / "gru_encoder-2.0.mar" and sorted(p.name for p in tmp_path.iterdir()) == ["gru_encoder-2.0.mar"]
    with zipfile.ZipFile(mar) as z:
        assert json.loads(z.read("MAR-INF/MANIFEST.json"))["model"] == {
            "modelName": "gru_encoder", "serializedFile": "encoder.safetensors", "handler": "encoder_handler.py", "modelVersion": "2.0"}
        assert json.loads(z.read("metrics.json")) == json.loads((smoke_run / "metrics.json").read_text())
    described = versions.describe_mar(mar, "2.0")
    assert described.weights_sha256 == json.loads((smoke_run / "config.json").read_text())["files"]["weights"]["sha256"]
    with pytest.raises(VersionError):
        build_archive(ArchiveConfig(run_dir=str(smoke_run), export_path=str(tmp_path), version="../x"))


def test_info_and_models_list_the_served_versions(smoke_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRU_ENCODER_MODEL_STORE", str(tmp_path))
    monkeypatch.delenv("GRU_ENCODER_SETTINGS", raising=False)
    handler = GruEncoderHandler()
    handler.initialize(FakeContext(smoke_run))

    def get(route: str) -> dict:
        ctx = FakeContext(Path("."), [{"X-Gru-Encoder-Route": route}])
        [body] = handler.handle([{"body": b""}], ctx)
        assert ctx.status[0] == 200 and ctx.headers[0]["X-Model-Version"] == "1.0"
        return json.loads(body)

    sha = json.loads((smoke_run / "config.json").read_text())["files"]["weights"]["sha256"]
    info = get("info")  # no state file: this version alone, described from its own run
    assert info["default_version"] == "1.0" and [(v["version"], v["weights_sha256"], v["default"]) for v in info["versions"]] == [
        ("1.0", sha, True)]
    assert [m["id"] for m in get("models")["data"]] == ["gru_encoder"]  # one version: the model's id alone
    state = State((entry("1.0", mar="gru_encoder.mar"), entry("2.0", bleu=3.5)), "1.0")
    versions.save(tmp_path, state)
    os.utime(tmp_path / "versions.json", ns=(1, 1))  # a new mtime even on a coarse clock
    info = get("info")
    assert info["version"] == "1.0" and info["default_version"] == "1.0"
    assert [(v["version"], v["default"], v["test_bleu"]) for v in info["versions"]] == [("1.0", True, 10.0), ("2.0", False, 3.5)]
    assert [m["id"] for m in get("models")["data"]] == ["gru_encoder", "gru_encoder@1.0", "gru_encoder@2.0"]

    def embed(model: str) -> tuple[int, dict]:
        ctx = FakeContext(Path("."), [{"X-Gru-Encoder-Route": "embeddings"}])
        [body] = handler.handle([{"body": json.dumps({"input": "i am cold .", "model": model}).encode()}], ctx)
        return ctx.status[0], json.loads(body)

    assert embed("gru_encoder@1.0")[0] == 200 and embed("gru_encoder")[0] == 200
    status, body = embed("gru_encoder@2.0")
    assert status == 422 and body["error"]["param"] == "model"
    assert "POST /predictions/gru_encoder/2.0" in body["error"]["message"], body


def test_the_client_pins_a_version() -> None:
    assert EncoderClient("http://h:1/", version="2.0").url == "http://h:1/predictions/gru_encoder/2.0"
    assert EncoderClient("http://h:1").url == "http://h:1/predictions/gru_encoder"
    with pytest.raises(ValueError, match="GET /info lists them"):
        EncoderClient("http://h:1", version="../models")


# ---- gru-encoder models against a fake management API


class FakeManagement:
    """TorchServe's management API as the CLI sees it: versions registered, a default, calls recorded."""

    url = "http://fake-management"

    def __init__(self, registered: list[str], default: str):
        self.versions, self.default_version, self.calls = {v: 1 for v in registered}, default, []

    def registered(self) -> dict[str, int]:
        return dict(self.versions)

    def default(self) -> str:
        return self.default_version

    def register(self, mar: str, workers: int) -> None:
        self.calls.append(("register", mar, workers))
        self.versions[mar.removeprefix("gru_encoder-").removesuffix(".mar")] = workers

    def unregister(self, version: str) -> None:
        self.calls.append(("unregister", version))
        self.versions.pop(version)

    def set_default(self, version: str) -> None:
        self.calls.append(("set_default", version))
        self.default_version = version


class FakeResponse:
    def __init__(self, status: int, body: Any):
        self.status_code, self.body, self.text = status, body, json.dumps(body)

    def json(self) -> Any:
        return self.body


class FakeSession:
    """The served predictions: each version answers as its run's encoder (or as `answers` says)."""

    def __init__(self, answers: dict[str, Any]):
        self.answers = answers

    def post(self, url: str, json: dict, timeout: float) -> FakeResponse:
        version = url.rsplit("/", 1)[1]
        answer = self.answers.get(version)
        return FakeResponse(404, {"code": 404}) if answer is None else FakeResponse(200, answer)


@pytest.fixture
def cli(tmp_path: Path, smoke_run: Path, monkeypatch: pytest.MonkeyPatch):
    """A store with 1.0 (held-out BLEU 20) served; returns (context, fake management, run the CLI -> (code, stderr)).
    The server's metrics are management.metrics_text (no pinned request yet)."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "gru_encoder.mar").write_bytes(b"1.0's archive")
    versions.save(store, State((entry("1.0", bleu=20.0, mar="gru_encoder.mar"),), "1.0"))
    management = FakeManagement(["1.0"], "1.0")
    management.metrics_text = "# TYPE gru_encoder_pinned_request_time_seconds gauge\n"  # type: ignore[attr-defined]
    monkeypatch.setattr(models_cli.traffic, "fetch", lambda url, timeout=5.0: management.metrics_text)

    def archive(run: Path, version: str, where: Path) -> Path:
        (where / versions.mar_name(version)).write_bytes(b"archive")
        return where / versions.mar_name(version)

    said: list[str] = []
    ctx = Context(management, "http://fake-inference", store, archive=archive, session=FakeSession({}),  # type: ignore[arg-type]
                  ready_timeout=1.0, say=said.append)

    def run(*argv: str) -> int:
        return models_cli.main(["models", *argv], ctx)

    return ctx, management, run, said


def snapshot(ctx: Context) -> tuple:
    return (versions.state_path(ctx.store).read_bytes(), sorted(p.name for p in ctx.store.iterdir() if p.name != LOCK),
            ctx.management.registered(), ctx.management.default())


@pytest.mark.slow
def test_add_registers_checks_then_records(cli, smoke_run: Path) -> None:
    ctx, management, run, said = cli
    ctx.session.answers["2.0"] = expected_answer(smoke_run, "2.0")
    assert run("add", str(smoke_run), "--version", "2.0", "--workers", "1") == 0
    assert management.calls == [("register", "gru_encoder-2.0.mar", 1)] and management.default() == "1.0"
    state = versions.load(ctx.store)
    added = state.require("2.0")
    assert state.default == "1.0" and added.mar == "gru_encoder-2.0.mar" and added.workers == 1 and added.added_at
    assert added.weights_sha256 == json.loads((smoke_run / "config.json").read_text())["files"]["weights"]["sha256"]
    assert added.bleu == json.loads((smoke_run / "metrics.json").read_text())["test_bleu"]
    assert "promote 2.0" in said[-1]


@pytest.mark.slow
def test_add_undoes_everything_when_the_served_answers_differ(cli, smoke_run: Path, capsys: pytest.CaptureFixture) -> None:
    ctx, management, run, _ = cli
    wrong = expected_answer(smoke_run, "2.0")
    wrong["hidden"][0][0][0] += 1e-3
    ctx.session.answers["2.0"] = wrong
    before = snapshot(ctx)
    assert run("add", str(smoke_run), "--version", "2.0") == 1
    assert "hidden differs from the run's encoder by 1.00e-03" in capsys.readouterr().err
    assert management.calls == [("register", "gru_encoder-2.0.mar", 1), ("unregister", "2.0")]
    assert snapshot(ctx) == before  # unregistered, archive deleted, state untouched


@pytest.mark.slow
def test_add_undoes_a_version_that_never_answers(cli, smoke_run: Path, capsys: pytest.CaptureFixture) -> None:
    ctx, management, run, _ = cli
    before = snapshot(ctx)
    assert run("add", str(smoke_run), "--version", "2.0") == 1
    assert "did not answer /predictions/gru_encoder/2.0" in capsys.readouterr().err
    assert management.calls[-1] == ("unregister", "2.0") and snapshot(ctx) == before


LOCK = ".versions.json.lock"


def test_one_change_at_a_time(cli, capsys: pytest.CaptureFixture) -> None:
    ctx, management, run, _ = cli
    with versions.locked(ctx.store):
        assert run("rollback") == 1
    assert "another gru-encoder models command is changing" in capsys.readouterr().err and management.calls == []
    assert run("list") == 0  # reading needs no lock


def mar_with_weights(path: Path, sha: str) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps({"files": {"weights": {"sha256": sha}}}))


def test_the_launcher_refuses_a_version_whose_archive_changed(tmp_path: Path) -> None:
    """make archive after make train rewrites gru_encoder.mar: version 1.0 would silently change under its callers."""
    from gru_encoder.host.serve import LaunchError, check_ready

    mar_with_weights(tmp_path / "gru_encoder.mar", "11" * 32)
    mar_with_weights(tmp_path / "gru_encoder-2.0.mar", "ab" * 32)
    versions.save(tmp_path, State((entry("1.0", mar="gru_encoder.mar"), entry("2.0")), "1.0"))
    settings = ServingSettings(model_store=str(tmp_path), batch_fill="wait")
    with pytest.raises(LaunchError, match=r"gru_encoder.mar holds weights 111111111111…, but version 1.0 was recorded with abababababab…"):
        check_ready(settings)
    mar_with_weights(tmp_path / "gru_encoder.mar", "ab" * 32)
    assert versions.changed_archives(tmp_path, versions.load(tmp_path)) == []


def corrupt_copy(run: Path, where: Path) -> Path:
    shutil.copytree(run, where)
    weights = where / "encoder.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return where


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "message"), [
    (["add", "{run}", "--version", "1.0"], "version 1.0 is already served"),
    (["add", "{run}", "--version", "../x"], "is not a version name"),
    (["add", "{empty}", "--version", "2.0"], "is refused: .*config.json not found"),
    (["add", "{corrupt}", "--version", "2.0"], "is refused: sha256 mismatch"),
    (["--max-versions", "1", "add", "{run}", "--version", "2.0"], r"the most at once \(1\): retire one first"),
    (["add", "{run}", "--version", "2.0", "--workers", "0"], "--workers 0: at least 1"),
    (["retire", "1.0"], "version 1.0 is the default: promote another version first"),
    (["retire", "7.0"], "version 7.0 is not served"),
    (["promote", "7.0"], "version 7.0 is not served"),
    (["rollback"], "no earlier default"),
], ids=["duplicate", "bad-name", "bad-run", "corrupt-weights", "cap", "workers", "retire-default", "retire-unknown", "promote-unknown",
        "rollback-none"])
def test_refusals_change_nothing(cli, smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str) -> None:
    ctx, management, run, _ = cli
    (tmp_path / "empty").mkdir()
    paths = {"run": str(smoke_run), "empty": str(tmp_path / "empty"), "corrupt": str(corrupt_copy(smoke_run, tmp_path / "corrupt"))}
    before = snapshot(ctx)
    assert run(*[a.format(**paths) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gru-encoder models: ") and len(err.splitlines()) == 1
    assert __import__("re").search(message, err), err
    assert management.calls == [] and snapshot(ctx) == before


def test_a_version_registered_outside_the_state_is_not_added_over(cli, capsys: pytest.CaptureFixture) -> None:
    ctx, management, run, _ = cli
    management.versions["2.0"] = 1
    assert run("add", "runs/default", "--version", "2.0") == 1
    assert "TorchServe already has version 2.0" in capsys.readouterr().err and management.calls == []


def test_promote_is_gated_on_held_out_bleu_then_rollback_and_retire(cli, capsys: pytest.CaptureFixture) -> None:
    ctx, management, run, said = cli
    state = versions.load(ctx.store)
    (ctx.store / "gru_encoder-2.0.mar").write_bytes(b"2.0")
    (ctx.store / "gru_encoder-2.1.mar").write_bytes(b"2.1")
    versions.save(ctx.store, state.with_version(entry("2.0", bleu=18.5)).with_version(entry("2.1", bleu=19.2)))
    management.versions.update({"2.0": 1, "2.1": 1})
    assert run("promote", "2.0") == 1
    assert "held-out BLEU 18.50 is 1.50 below the default 1.0's 20.00 (more than the margin of 1): not promoted; --force" in \
        capsys.readouterr().err
    assert management.calls == [] and versions.load(ctx.store).default == "1.0"
    assert run("promote", "2.0", "--margin", "2") == 0 and versions.load(ctx.store).default == "2.0"
    assert run("promote", "2.1") == 0  # 19.2 against 18.5: better
    assert run("rollback") == 0 and versions.load(ctx.store).default == "2.0"
    assert run("rollback") == 0 and versions.load(ctx.store).default == "1.0"
    assert management.calls == [("set_default", "2.0"), ("set_default", "2.1"), ("set_default", "2.0"), ("set_default", "1.0")]
    assert run("retire", "2.0") == 0
    assert management.calls[-1] == ("unregister", "2.0") and not (ctx.store / "gru_encoder-2.0.mar").exists()
    assert versions.load(ctx.store).names() == ["1.0", "2.1"]
    assert run("promote", "2.1", "--force") == 0 and management.default() == "2.1"
    assert run("retire", "1.0") == 0 and (ctx.store / "gru_encoder.mar").exists(), "make archive's own file stays"
    versions.save(ctx.store, versions.load(ctx.store).with_version(entry("3.0", bleu=None)))
    assert run("promote", "3.0") == 1 and "held-out BLEU of version 3.0 is unknown" in capsys.readouterr().err
    served = 'gru_encoder_requests_total{ModelName="gru_encoder",version="2.1",route="%s",status="200",pinned="0",Hostname="h",} %s\n'
    management.metrics_text += served % ("predictions", "5.0") + served % ("embeddings", "2.0")
    run("list")
    assert said[-3].split() == ["version", "default", "unpinned", "weights_sha256", "bleu", "trained_at", "requests", "workers"]
    assert said[-2].split() == ["2.1", "*", "100%", "ab" * 8, "19.20", "?", "7", "1", "ready"]
    assert said[-1].split()[:3] == ["3.0", "0%", "abababababababab"] and said[-1].endswith("not registered: restart the server")
    management.default_version = "9.9"  # changed behind the state's back
    run("list")
    assert said[-1].startswith("TorchServe's default is 9.9, not 2.1: a restart sets it back")


def test_canary_sends_a_share_of_unpinned_callers_and_promote_ends_it(cli: tuple, capsys: pytest.CaptureFixture) -> None:
    ctx, management, run, said = cli
    (ctx.store / "gru_encoder-2.0.mar").write_bytes(b"2.0")
    versions.save(ctx.store, versions.load(ctx.store).with_version(entry("2.0", bleu=25.0)))
    management.versions.update({"2.0": 1})
    before = versions.release_path(ctx.store).read_text()
    assert run("canary", "1.0", "--percent", "10") == 1 and "is the default" in capsys.readouterr().err
    assert run("canary", "2.0", "--percent", "250") == 1 and "from 0 (no canary) to 100" in capsys.readouterr().err
    assert versions.release_path(ctx.store).read_text() == before, "a refused canary changes nothing the gateway serves"
    assert run("canary", "2.0", "--percent", "25") == 0
    assert said[-1].startswith("25% of unpinned callers (by API key, X-Caller-ID or address) are on version 2.0")
    assert '25% "2.0";' in versions.release_path(ctx.store).read_text() and management.calls == []  # the gateway's alone
    run("list")
    assert [line.split()[:3] for line in said[-2:]] == [["1.0", "*", "75%"], ["2.0", "25%", "ab" * 8]]
    assert run("retire", "2.0") == 1 and "end the canary first" in capsys.readouterr().err
    assert run("promote", "2.0") == 0 and "the canary of 2.0 ended" in said[-1]
    state = versions.load(ctx.store)
    assert state.canary is None and state.default == "2.0"
    assert 'default "2.0";' in versions.release_path(ctx.store).read_text()


def test_a_replica_applies_each_change_of_the_state_and_only_the_change() -> None:
    from gru_encoder.host.reconcile import apply

    one = State((entry("1.0"),), "1.0")
    two = one.with_version(entry("2.0"))
    management = FakeManagement(["1.0"], "1.0")
    assert apply(management, one, two, workers=2) == ["registered 2.0 (gru_encoder-2.0.mar)"]
    assert management.calls == [("register", "gru_encoder-2.0.mar", 1)]
    assert apply(management, two, two.promoted("2.0"), 2) == ["default 2.0"]
    management.versions["9.9"] = 1  # registered by hand (or by `gru-encoder models add` before it saves): left alone
    management.calls.clear()
    after = two.promoted("2.0").rolled_back().without("2.0")
    assert apply(management, two, after, 2) == ["unregistered 2.0", "default 1.0"]
    assert "9.9" in management.versions and management.calls == [("unregister", "2.0"), ("set_default", "1.0")]


def test_retire_is_refused_while_callers_pin_the_version(cli: tuple, capsys: pytest.CaptureFixture) -> None:
    ctx, management, run, said = cli
    (ctx.store / "gru_encoder-2.0.mar").write_bytes(b"2.0")
    versions.save(ctx.store, versions.load(ctx.store).with_version(entry("2.0")))
    management.versions["2.0"] = 1
    gauge = 'gru_encoder_pinned_request_time_seconds{ModelName="gru_encoder",version="%s",Hostname="h",} %r\n'
    declared = management.metrics_text
    management.metrics_text = declared + gauge % ("2.0", time.time() - 30) + gauge % ("1.0", time.time())
    before = snapshot(ctx)
    assert run("retire", "2.0") == 1
    assert "version 2.0 answered a request pinned to it 30 s ago" in capsys.readouterr().err and snapshot(ctx) == before
    management.metrics_text = declared + gauge % ("2.0", time.time() - models_cli.traffic.QUIET_S - 5)  # quiet long enough
    assert run("retire", "2.0") == 0 and versions.load(ctx.store).names() == ["1.0"]


def test_a_change_that_moves_no_caller_leaves_the_release_file_and_a_pending_version_gets_no_caller(tmp_path: Path) -> None:
    one = versions.save(tmp_path, State((entry("1.0"), entry("2.0")), "1.0"))
    path = versions.release_path(tmp_path)
    inode, text = path.stat().st_ino, path.read_text()
    two = versions.save(tmp_path, replace(one, previous_defaults=("9",)))  # the state changed, the routing did not
    assert two.generation == one.generation + 1 and path.stat().st_ino == inode and path.read_text() == text
    assert versions.release_generation(tmp_path) == one.generation, "the gateway need not reload: the CLI waits for this"
    pending = versions.save(tmp_path, replace(two.with_version(entry("3.0")), pending=("3.0",)))
    assert versions.load(tmp_path).pending == ("3.0",) and '"3.0" "1";' not in path.read_text()
    versions.save(tmp_path, replace(pending, pending=()))
    assert '"3.0" "1";' in path.read_text() and versions.release_generation(tmp_path) == pending.generation + 1


def test_an_unpinned_call_in_several_requests_stays_on_the_version_that_answered_the_first(smoke_run: Path) -> None:
    """A default promoted between two requests of one encode() must not mix two versions' vectors in one answer."""
    import requests

    from gru_encoder.api.service import EncoderService
    from gru_encoder.core.artifacts import load_encoder

    loaded = load_encoder(smoke_run)
    services = {v: EncoderService(loaded, version=v) for v in ("1.0", "2.0")}

    class Server(requests.Session):
        """The unpinned route answers 1.0 once, then 2.0 (a promote); a pinned one its version."""

        def __init__(self) -> None:
            super().__init__()
            self.sent: list[tuple[str, str | None]] = []

        def post(self, url, json=None, headers=None, **_):  # type: ignore[override]
            self.sent.append((url, self.headers.get("X-Caller-ID")))
            pinned = url.rpartition("/predictions/gru_encoder/")[2] if "/predictions/gru_encoder/" in url else None
            version = pinned or ("1.0" if len(self.sent) == 1 else "2.0")
            status, body = services[version].handle([json])[0]
            response = requests.Response()
            response.status_code, response._content = status, body
            return response

    server = Server()
    client = EncoderClient("http://h:1", max_texts=2, session=server, retries=0, caller_id="index-builder-7")
    got = client.encode(["a", "b", "c", "d", "e"], return_=["hidden"])
    assert [url for url, _ in server.sent] == ["http://h:1/predictions/gru_encoder"] + ["http://h:1/predictions/gru_encoder/1.0"] * 2
    assert {caller for _, caller in server.sent} == {"index-builder-7"} and got.model["version"] == client.last_version == "1.0"
    with pytest.raises(ValueError, match="caller_id"):
        EncoderClient("http://h:1", caller_id="two words")
