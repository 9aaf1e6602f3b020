"""`gru-encoder models`: the served versions of the model on a running server (make serve), changed safely.

    gru-encoder models list                                   # every version: default, weights, held-out BLEU, trained, workers
    gru-encoder models add runs/other --version 2.0 [--workers 1]
    gru-encoder models canary 2.0 --percent 25               # a quarter of the unpinned callers on 2.0, sticky per caller
    gru-encoder models promote 2.0 [--force]                 # the default (the unpinned routes) becomes 2.0
    gru-encoder models rollback                              # the previous default again
    gru-encoder models retire 2.0                            # unregistered; never the default

It talks to TorchServe's management API (127.0.0.1 only; registration admits only .mar files of the model
store) and keeps <model_store>/versions.json (host/versions.py), which the launcher restores at every
start. By default it finds make serve's ports and store in logs/serving-settings.json (what the launcher
wrote), else the settings' defaults (management 127.0.0.1:8081, TorchServe 127.0.0.1:8083, ./model_store);
--management-url, --inference-url and --model-store change them.

`add` changes nothing served until the new version has proved itself: the run is checked (weights hash,
config against weights, vocab), archived, registered with its own workers, and its served answers compared
with the run's own encoder in this process; only then is the state written. On any failure it unregisters
what it registered, deletes the archive it wrote and says why. `promote` is gated on held-out quality: a
version whose held-out BLEU (its run's metrics.json) is more than --margin below the default's is refused
unless --force. `canary`, `promote` and `rollback` take effect at the gateway: every save writes its release
file (api/release_conf.py), which the gateway reloads within a second; the command waits until it has.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import zipfile
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import requests

from gru_encoder.host import traffic, versions
from gru_encoder.host.settings import ServingSettings
from gru_encoder.host.versions import MODEL_NAME, State, Version, VersionError

PREFIX = "gru-encoder models:"
ROOT = Path(__file__).resolve().parents[2]  # the checkout (the console script is an editable install)
SETTINGS_FILE = "logs/serving-settings.json"  # what make serve's launcher wrote: its ports and store
BLEU_MARGIN = 1.0  # held-out BLEU a new default may lose against the current one
# What `add` sends to the new version and compares with the run's own encoder (unknown words, CJK, punctuation).
CHECK_TEXTS = ("i am cold .", "He is very tall and she is not, I think.", "zorblax quux!", "我爱你", "a")
RELEASE_SETTLE_S = 0.5  # after the gateway runs a new release, until its old workers surely accept nothing
CHECK_TOLERANCE = 1e-5  # batched floats may differ in the last bits (docs/API.md)


class CommandError(RuntimeError):
    """A refusal or failure, said in one line with how to fix it."""


class Management:
    """TorchServe's management API for this model's versions; a non-2xx answer is a CommandError with TorchServe's message."""

    def __init__(self, url: str, timeout: float = 120.0, session: requests.Session | None = None):
        self.url, self.timeout = url.rstrip("/"), timeout
        self.session = session or requests.Session()

    def _call(self, method: str, path: str, **params: Any) -> Any:
        try:
            r = self.session.request(method, self.url + path, params=params or None, timeout=self.timeout)
        except requests.RequestException as e:
            raise CommandError(f"TorchServe's management API at {self.url} does not answer ({type(e).__name__}): start the "
                               "server (make serve) or pass --management-url") from None
        if not r.ok:
            try:
                message = r.json().get("message", r.text)
            except ValueError:
                message = r.text
            raise CommandError(f"TorchServe refused {method} {path} (HTTP {r.status_code}): {str(message)[:300]}")
        return r.json() if r.content else None

    def registered(self) -> dict[str, int]:
        """Each registered version of the model and how many of its workers are READY."""
        described = self._call("GET", f"/models/{MODEL_NAME}/all")
        return {d["modelVersion"]: sum(w.get("status") == "READY" for w in d.get("workers", ())) for d in described}

    def default(self) -> str:
        return self._call("GET", f"/models/{MODEL_NAME}")[0]["modelVersion"]

    def register(self, mar: str, workers: int) -> None:
        """Register an archive of the model store by its file name, its workers started before the answer."""
        self._call("POST", "/models", url=mar, initial_workers=workers, synchronous="true")

    def unregister(self, version: str) -> None:
        self._call("DELETE", f"/models/{MODEL_NAME}/{version}")

    def set_default(self, version: str) -> None:
        self._call("PUT", f"/models/{MODEL_NAME}/{version}/set-default")


class Compose:
    """The TorchServe replicas of a compose stack (docs/DEPLOY.md#model-versions): the state is written to the
    store they mount, each replica's launcher applies it (host/reconcile.py), and this asks each one what it
    serves with `docker compose exec` (host/replica_status.py: their management API is on their own loopback)."""

    def __init__(self, command: Sequence[str], services: Sequence[str] | None = None):
        self.command = list(command)
        self.services = list(services) if services else self._services()

    def _run(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([*self.command, *argv], capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CommandError(f"{shlex.join([*self.command, *argv])} failed ({type(e).__name__}): is the stack up (make up)?") from None

    def _services(self) -> list[str]:
        done = self._run(["ps", "--services"], 60)
        services = [name for name in done.stdout.split() if name.startswith("torchserve")]
        if done.returncode != 0 or not services:
            raise CommandError(f"no running TorchServe service in {shlex.join(self.command)} ps ({done.stderr.strip()[-200:]}): "
                               "start the stack (make up), or name the services with --replicas")
        return services

    def last_pinned(self, service: str, version: str) -> float | None:
        return self.status(service).get("last_pinned", {}).get(version)

    def requests(self, service: str, names: Sequence[str]) -> dict[str, int]:
        return self.status(service).get("requests", {})

    def status(self, service: str, version: str | None = None, timeout: float = 120.0) -> dict[str, Any]:
        """What the replica `service` serves (and, with `version`, its answer to CHECK_TEXTS once it answers)."""
        argv = ["exec", "-T", service, "python3", "-m", "gru_encoder.host.replica_status", "--timeout", str(timeout)]
        done = self._run(argv + (["--version", version] if version else []), timeout + 60)
        if done.returncode != 0:
            raise CommandError(f"replica {service}: {(done.stderr.strip().splitlines() or ['no answer'])[-1][:400]}")
        return json.loads(done.stdout)


class DnsReplicas:
    """The TorchServe replicas behind one name with an address per replica (a Kubernetes headless Service),
    each asked directly on its inference port: which of the store's versions it answers, and with what."""

    def __init__(self, target: str, store: Path, first_mar: str, metrics_port: int = 8082):
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise CommandError(f"--replicas-dns {target!r}: HOST:PORT, e.g. torchserve-replicas:8080")
        self.host, self.port, self.store, self.first_mar = host, int(port), store, first_mar
        self.metrics_port = metrics_port
        self.session = requests.Session()

    @property
    def services(self) -> list[str]:
        try:
            found = sorted({a[4][0] for a in socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)})
        except OSError as e:
            raise CommandError(f"{self.host} does not resolve ({e}): the replicas' headless Service (docs/SCALING.md)") from None
        return [f"[{a}]:{self.port}" if ":" in a else f"{a}:{self.port}" for a in found]

    def _answer(self, service: str, version: str) -> requests.Response | None:
        try:
            return self.session.post(f"http://{service}/predictions/{MODEL_NAME}/{version}",
                                     json={"texts": list(CHECK_TEXTS), "return": ["output", "hidden"]}, timeout=30)
        except requests.RequestException:
            return None

    def status(self, service: str, version: str | None = None, timeout: float = 120.0) -> dict[str, Any]:
        if version is None:
            state = versions.load(self.store, self.first_mar)
            served = {v: 1 for v in state.names() if (r := self._answer(service, v)) is not None and r.status_code == 200}
            return {"replica": service, "default": state.default, "versions": served}
        deadline = time.monotonic() + timeout
        while (r := self._answer(service, version)) is None or r.status_code != 200:
            if time.monotonic() > deadline:
                raise CommandError(f"replica {service}: version {version} does not answer after {timeout:.0f} s "
                                   f"({'no connection' if r is None else f'HTTP {r.status_code}'}): see that pod's log")
            time.sleep(0.5)
        return {"replica": service, "answer": r.json()}

    def requests(self, service: str, names: Sequence[str]) -> dict[str, int]:
        text = traffic.fetch(f"http://{service.rpartition(':')[0]}:{self.metrics_port}/metrics")
        return {v: traffic.requests_served(text, v) for v in names}

    def last_pinned(self, service: str, version: str) -> float | None:
        """From the replica's own metrics port (metrics_port of the serving settings, 8082 by default)."""
        host = service.rpartition(":")[0]
        try:
            return traffic.last_pinned(traffic.fetch(f"http://{host}:{self.metrics_port}/metrics"), version)
        except traffic.TrafficError as e:
            raise CommandError(f"{e}; or --force to retire without knowing whether callers still pin it") from None


class Replicated(Management):
    """The management calls of `gru-encoder models` against replicas that follow the state themselves: what
    is registered is what *every* replica serves; registering, unregistering and the default are each
    replica's reconciler's, on the next look at the saved state (nothing to call here)."""

    def __init__(self, compose: Compose | DnsReplicas):
        super().__init__("(each replica's loopback)")
        self.compose = compose

    def registered(self) -> dict[str, int]:
        reports = [self.compose.status(service) for service in self.compose.services]
        common = set.intersection(*(set(r["versions"]) for r in reports))
        return {v: min(r["versions"][v] for r in reports) for v in common}

    def default(self) -> str:
        return self.compose.status(self.compose.services[0])["default"]

    def register(self, mar: str, workers: int) -> None:
        pass

    def unregister(self, version: str) -> None:
        pass

    def set_default(self, version: str) -> None:
        pass


def archive_run(run: Path, version: str, store: Path) -> Path:
    """`python -m training.archive --version V` into the store (the command printed, as make archive prints it)."""
    if not (ROOT / "training" / "archive.py").is_file():
        raise CommandError(f"training/archive.py not found under {ROOT}: run gru-encoder from the project's checkout (make venv)")
    cmd = [sys.executable, "-m", "training.archive", "--run-dir", str(run), "--version", version, "--export-path", str(store)]
    print("+ " + shlex.join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise CommandError(f"archiving {run} failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    return store / versions.mar_name(version)


@dataclass
class Context:
    """Where the server and its store are, and the steps `add` takes (replaceable in tests)."""

    management: Management
    inference_url: str  # TorchServe itself (behind make serve's gateway: 127.0.0.1:8083)
    store: Path
    first_mar: str = f"{MODEL_NAME}.mar"
    max_versions: int = versions.MAX_VERSIONS
    margin: float = BLEU_MARGIN
    ready_timeout: float = 120.0
    archive: Callable[[Path, str, Path], Path] = archive_run
    session: requests.Session = field(default_factory=requests.Session)
    say: Callable[[str], None] = print

    gateway_status: Path | None = None  # the local gateway's status socket (make serve): where it says its release
    release_timeout: float = 10.0
    compose: Compose | DnsReplicas | None = None  # replicas that follow the state themselves (compose, Kubernetes)
    metrics_url: str = "http://127.0.0.1:8082/metrics"  # TorchServe's Prometheus metrics (make serve)

    def state(self) -> State:
        try:
            return versions.load(self.store, self.first_mar)
        except VersionError as e:
            raise CommandError(str(e)) from None

    def save(self, state: State) -> State:
        saved = versions.save(self.store, state)
        wait_released(self, versions.release_generation(self.store) or saved.generation)
        return saved


def gateway_generation(status: Path, timeout: float = 2.0) -> int | None:
    """The release generation the local gateway runs (GET /release on its status socket); None: no answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(status))
            s.sendall(b"GET /release HTTP/1.0\r\nHost: gateway\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
    except OSError:
        return None
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(body) if head.startswith(b"HTTP/1.1 200") and body.strip().isdigit() else None


def wait_released(ctx: Context, generation: int) -> None:
    """Until the gateway runs the release of `generation` (it reloads when the file changes). Without a local
    gateway to ask (TorchServe alone, or a gateway elsewhere that polls the same file), the file is written
    and that is all this process can know."""
    if ctx.gateway_status is None or not ctx.gateway_status.exists():
        if ctx.compose is not None:  # its gateway looks at the release file every second (GATEWAY_RELEASE_POLL)
            time.sleep(1.0 + RELEASE_SETTLE_S + 0.5)
        return
    deadline = time.monotonic() + ctx.release_timeout
    while (seen := gateway_generation(ctx.gateway_status)) is None or seen < generation:
        if time.monotonic() > deadline:
            raise CommandError(f"the gateway still runs release {seen} of {versions.release_path(ctx.store)}, not {generation}, "
                               f"after {ctx.release_timeout:.0f} s: see its log (logs/ of make serve) for why nginx refused to reload")
        time.sleep(0.1)
    # nginx starts the new workers, then tells the old ones to stop accepting: for a few milliseconds after the new
    # release first answers, an old worker may still accept a connection (and answer it under the old release).
    time.sleep(RELEASE_SETTLE_S)


def predict(ctx: Context, version: str, texts: Sequence[str] = CHECK_TEXTS) -> requests.Response:
    return ctx.session.post(f"{ctx.inference_url}/predictions/{MODEL_NAME}/{version}",
                            json={"texts": list(texts), "return": ["output", "hidden"]}, timeout=30)


def wait_answering(ctx: Context, version: str) -> None:
    """Until /predictions/gru_encoder/<version> answers a real request (200), or CommandError past ready_timeout."""
    deadline, last = time.monotonic() + ctx.ready_timeout, "no answer"
    while time.monotonic() < deadline:
        try:
            r = predict(ctx, version, ["ping"])
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except requests.RequestException as e:
            last = type(e).__name__
        time.sleep(0.5)
    raise CommandError(f"version {version} did not answer /predictions/{MODEL_NAME}/{version} within {ctx.ready_timeout:.0f} s "
                       f"({last}): see TorchServe's logs (logs/model_log.log)")


def expected_answer(run: Path, version: str) -> dict[str, Any]:
    """The run's own encoder, in this process, on CHECK_TEXTS: the native JSON body a served version must give.
    CommandError when the run does not load and check out (weights hash, config against weights, vocab)."""
    from gru_encoder.api.service import EncoderService  # torch: only where a run is checked
    from gru_encoder.core.artifacts import ArtifactError, load_encoder

    try:
        loaded = load_encoder(run)
    except ArtifactError as e:
        raise CommandError(f"run {run} is refused: {e}") from None
    service = EncoderService(loaded, version=version)
    status, body = service.handle([{"texts": list(CHECK_TEXTS), "return": ["output", "hidden"]}])[0]
    assert status == 200, body
    return json.loads(body)


def compare(served: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """What differs between a served answer and the in-process one (None: the same, floats within CHECK_TOLERANCE)."""
    import numpy as np

    if served.get("model") != expected["model"]:
        return f"the server answered as {served.get('model')}, the run is {expected['model']}"
    if served.get("ids") != expected["ids"]:
        return "the token ids differ (another vocab or tokenizer)"
    for name in ("output", "hidden"):
        gap = float(np.abs(np.asarray(served[name], np.float32) - np.asarray(expected[name], np.float32)).max())
        if not gap <= CHECK_TOLERANCE:
            return f"{name} differs from the run's encoder by {gap:.2e} (more than {CHECK_TOLERANCE:g})"
    return None


def check_served(ctx: Context, version: str, expected: dict[str, Any]) -> None:
    r = predict(ctx, version)
    if r.status_code != 200:
        raise CommandError(f"version {version} answered HTTP {r.status_code}: {r.text[:200]}")
    problem = compare(r.json(), expected)
    if problem:
        raise CommandError(f"version {version} does not serve its run: {problem}; check the run folder and add it again")


@contextlib.contextmanager
def run_folder(run: Path, version: str) -> Iterator[tuple[Path, Callable[[Path, str, Path], Path] | None]]:
    """The run to add: a run folder as it is, or a built archive (gru_encoder-<V>.mar) unpacked into a temporary
    folder, with the step that puts it into the store in place of archiving (serving images have no training code)."""
    if not run.is_file():
        yield run, None
        return
    try:
        with zipfile.ZipFile(run) as z:
            manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]
            with tempfile.TemporaryDirectory(prefix="gru-encoder-add-") as tmp:
                z.extractall(tmp, [n for n in z.namelist() if "/" not in n and not n.endswith(".py")])
                for name in os.listdir(tmp):  # the run's own times (its training date), not the unpacking's
                    stamp = datetime(*z.getinfo(name).date_time).timestamp()
                    os.utime(Path(tmp) / name, (stamp, stamp))
                if manifest.get("modelName") != MODEL_NAME or manifest.get("modelVersion") != version:
                    raise CommandError(f"{run} is version {manifest.get('modelVersion')} of {manifest.get('modelName')}, not {version} "
                                       f"of {MODEL_NAME}: build it with python -m training.archive --run-dir RUN --version {version}")

                def copy(_run: Path, v: str, store: Path) -> Path:
                    target = store / versions.mar_name(v)
                    shutil.copyfile(run, target)
                    return target

                yield Path(tmp), copy
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise CommandError(f"{run} is not a model archive ({type(e).__name__}: {str(e)[:200]}): pass a run folder or a .mar") from None


def add_replicated(ctx: Context, run: Path, version: str, workers: int, source: Path | None = None) -> None:
    """`add` for replicas that follow the state (ctx.compose): archive, record, then prove on every replica;
    on any failure the version is taken out of the state again (the replicas unregister it) and its archive deleted."""
    assert ctx.compose is not None
    state = ctx.state()
    try:
        entry = Version(version, versions.mar_name(version, ctx.first_mar), workers)
        state.with_version(entry, ctx.max_versions)
    except VersionError as e:
        raise CommandError(str(e)) from None
    mar = ctx.store / entry.mar
    if mar.exists():
        raise CommandError(f"{mar} exists but is not served: delete it, or choose another version name")
    expected = expected_answer(run, version)
    ctx.say(f"archiving {run} as version {version}")
    ctx.archive(run, version, ctx.store)
    # Pending: every replica loads it, the gateway sends nobody to it until each one answered as the run does.
    added = state.with_version(replace(versions.describe_run(run, version, entry.mar, workers), run_dir=str(source or run)),
                               ctx.max_versions)
    saved = versions.save(ctx.store, replace(added, pending=(*added.pending, version)))
    try:
        for service in ctx.compose.services:
            ctx.say(f"waiting for replica {service} to serve version {version}")
            problem = compare(ctx.compose.status(service, version, ctx.ready_timeout)["answer"], expected)
            if problem:
                raise CommandError(f"replica {service} does not serve the run as version {version}: {problem}")
    except BaseException:
        versions.save(ctx.store, replace(saved.without(version), pending=tuple(p for p in saved.pending if p != version)))
        mar.unlink(missing_ok=True)
        raise
    ctx.save(replace(saved, pending=tuple(p for p in saved.pending if p != version)))
    ctx.say(f"version {version} is served by {len(ctx.compose.services)} replicas at /predictions/{MODEL_NAME}/{version}; "
            f"the default is still {state.default} (gru-encoder models promote {version})")


def add(ctx: Context, run: Path, version: str, workers: int) -> None:
    """Archive, register, prove and record a new version; on any failure undo what was done and say why."""
    with run_folder(run, version) as (folder, copy):
        if copy is not None:
            ctx = replace(ctx, archive=copy)
        source = run.resolve() if copy is not None else None  # what the state records as where the version came from
        if ctx.compose is not None:
            return add_replicated(ctx, folder, version, workers, source)
        return add_local(ctx, folder, version, workers, source)


def add_local(ctx: Context, run: Path, version: str, workers: int, source: Path | None = None) -> None:
    """`add` against one TorchServe whose management API this process reaches (make serve)."""
    state = ctx.state()
    try:
        entry = Version(version, versions.mar_name(version, ctx.first_mar), workers)  # refuses a bad name
        state.with_version(entry, ctx.max_versions)  # a version that exists, one past the cap
    except VersionError as e:
        raise CommandError(str(e)) from None
    if version in ctx.management.registered():
        raise CommandError(f"TorchServe already has version {version}, though {versions.state_path(ctx.store)} does not list it: "
                           f"unregister it (curl -X DELETE {ctx.management.url}/models/{MODEL_NAME}/{version}) or choose another")
    mar = ctx.store / entry.mar
    if mar.exists():
        raise CommandError(f"{mar} exists but is not served: delete it, or choose another version name")
    expected = expected_answer(run, version)  # the run checks out before anything is written
    registered = False
    try:
        ctx.say(f"archiving {run} as version {version}")
        ctx.archive(run, version, ctx.store)
        ctx.say(f"registering {entry.mar} with {workers} worker(s)")
        ctx.management.register(entry.mar, workers)
        registered = True
        wait_answering(ctx, version)
        check_served(ctx, version, expected)
    except BaseException:
        if registered:
            _quietly(lambda: ctx.management.unregister(version))
        mar.unlink(missing_ok=True)
        raise
    ctx.save(state.with_version(replace(versions.describe_run(run, version, entry.mar, workers), run_dir=str(source or run)), ctx.max_versions))
    ctx.say(f"version {version} is served at /predictions/{MODEL_NAME}/{version}; the default is still {state.default} "
            f"(gru-encoder models promote {version})")


def _quietly(step: Callable[[], None]) -> None:
    try:
        step()
    except CommandError as e:
        print(f"{PREFIX} while undoing: {e}", file=sys.stderr)


def gate(candidate: Version, default: Version, margin: float) -> str | None:
    """Why `candidate` may not replace `default` on held-out quality (None: it may)."""
    new, old = candidate.bleu, default.bleu
    if new is None or old is None:
        which = candidate.version if new is None else default.version
        return f"the held-out BLEU of version {which} is unknown (its run has no metrics.json with test_bleu)"
    if new < old - margin:
        return (f"version {candidate.version}'s held-out BLEU {new:.2f} is {old - new:.2f} below the default {default.version}'s "
                f"{old:.2f} (more than the margin of {margin:g})")
    return None


def served_everywhere(ctx: Context, version: str) -> None:
    """CommandError unless every replica serves `version` (checked before the gateway sends callers to it)."""
    if version not in ctx.management.registered():
        where = "every replica" if ctx.compose else "TorchServe"
        raise CommandError(f"version {version} is not served by {where} (gru-encoder models list shows which): "
                           "restart the replica that lacks it, or add the version again")


def promote(ctx: Context, version: str, force: bool) -> None:
    """Make `version` the default (TorchServe, then the state), gated on held-out BLEU unless `force`."""
    state = ctx.state()
    try:
        entry = state.require(version)
    except VersionError as e:
        raise CommandError(str(e)) from None
    if version == state.default:
        ctx.say(f"version {version} is already the default")
        return
    refusal = gate(entry, state.require(state.default), ctx.margin)
    if refusal and not force:
        raise CommandError(f"{refusal}: not promoted; --force to promote it anyway")
    if refusal:
        ctx.say(f"promoting despite the gate (--force): {refusal}")
    served_everywhere(ctx, version)
    ctx.management.set_default(version)
    ctx.save(state.promoted(version))
    ended = f"; the canary of {state.canary.version} ended" if state.canary else ""
    ctx.say(f"version {version} is the default (was {state.default}{ended}; gru-encoder models rollback to go back)")


def canary(ctx: Context, version: str, percent: float) -> None:
    """Send `percent` of the unpinned callers to `version`, sticky per caller (0 ends the canary)."""
    state = ctx.state()
    try:
        after = state.with_canary(version, percent)
    except VersionError as e:
        raise CommandError(str(e)) from None
    if after.canary is not None:
        served_everywhere(ctx, version)
    ctx.save(after)
    if after.canary is None:
        ctx.say(f"no canary: every unpinned caller is on the default {state.default}")
    else:
        ctx.say(f"{versions.percent_text(percent)}% of unpinned callers (by API key, X-Caller-ID or address) are on version "
                f"{version}, the rest on the default {state.default}; pinned callers are not moved "
                f"(gru-encoder models promote {version}, or canary {version} --percent 0 to end it)")


def rollback(ctx: Context) -> None:
    """Make the newest earlier default that is still served the default again."""
    state = ctx.state()
    try:
        back = state.rolled_back()
    except VersionError as e:
        raise CommandError(str(e)) from None
    served_everywhere(ctx, back.default)
    ctx.management.set_default(back.default)
    ctx.save(back)
    ctx.say(f"version {back.default} is the default again (was {state.default})")


def last_pinned(ctx: Context, version: str) -> float | None:
    """Unix time of the newest request pinned to `version` that any replica answered (host/traffic.py)."""
    if ctx.compose is not None:
        return max((t for s in ctx.compose.services if (t := ctx.compose.last_pinned(s, version)) is not None), default=None)
    try:
        return traffic.last_pinned(traffic.fetch(ctx.metrics_url), version)
    except traffic.TrafficError as e:
        raise CommandError(f"{e}; or --force to retire without knowing whether callers still pin it") from None


def retire(ctx: Context, version: str, force: bool = False) -> None:
    """Unregister a version that is not the default; its archive is deleted (the settings' own archive is make archive's).
    Refused, unless `force`, while callers pinned it in the last traffic.QUIET_S seconds: they would get 404s."""
    state = ctx.state()
    try:
        after = state.without(version)
    except VersionError as e:
        raise CommandError(str(e)) from None
    entry = state.require(version)
    if not force:
        last = last_pinned(ctx, version)
        if last is not None and time.time() - last < traffic.QUIET_S:
            raise CommandError(f"version {version} answered a request pinned to it {max(0.0, time.time() - last):.0f} s ago "
                               f"(callers still use it; gru_encoder_pinned_request_time_seconds): tell them to move, wait until "
                               f"it had none for {traffic.QUIET_S / 60:.0f} minutes, or --force")
    ctx.save(after)  # the gateway and the replicas' reconcilers stop using it first
    try:
        if version in ctx.management.registered():
            ctx.management.unregister(version)
    except CommandError:
        if version in ctx.management.registered():  # else the launcher's reconciler unregistered it first
            raise
    if entry.mar != ctx.first_mar:
        (ctx.store / entry.mar).unlink(missing_ok=True)
    ctx.say(f"version {version} is retired (served: {', '.join(after.names())}, default {after.default})")


def requests_served(ctx: Context, names: Sequence[str]) -> dict[str, int]:
    """Requests each version answered since its server started, over every replica; {} when no metrics answer."""
    try:
        if ctx.compose is None:
            text = traffic.fetch(ctx.metrics_url)
            return {v: traffic.requests_served(text, v) for v in names}
        totals: dict[str, int] = {}
        for service in ctx.compose.services:
            for v, n in ctx.compose.requests(service, names).items():
                totals[v] = totals.get(v, 0) + n
        return totals
    except (traffic.TrafficError, CommandError):
        return {}


def list_versions(ctx: Context) -> None:
    """Every version of the state with what TorchServe runs of it, and any version TorchServe has beyond the state."""
    state = ctx.state()
    registered = ctx.management.registered()
    served = requests_served(ctx, state.names())
    rows = [("version", "default", "unpinned", "weights_sha256", "bleu", "trained_at", "requests", "workers")]
    for v in state.versions:
        workers = f"{registered[v.version]} ready" if v.version in registered else "not registered: restart the server"
        share = f"{versions.percent_text(state.canary_percent(v.version))}%"
        rows.append((v.version, "*" if v.version == state.default else "", share, (v.weights_sha256 or "?")[:16],
                     "?" if v.bleu is None else f"{v.bleu:.2f}", v.trained_at or "?", str(served.get(v.version, "?")), workers))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        ctx.say("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    served_default = ctx.management.default() if registered else None
    if served_default not in (None, state.default):
        ctx.say(f"TorchServe's default is {served_default}, not {state.default}: a restart sets it back "
                f"(or curl -X PUT {ctx.management.url}/models/{MODEL_NAME}/{state.default}/set-default)")
    stray = sorted(set(registered) - set(state.names()))
    if stray:
        ctx.say(f"registered but not in {versions.state_path(ctx.store)}: {', '.join(stray)} (gone at the next restart)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gru-encoder", description=__doc__.split("\n\n")[0])
    groups = top.add_subparsers(dest="group", required=True)
    models = groups.add_parser("models", help="the served versions of the model", description=__doc__.split("\n\n")[2])
    models.add_argument("--settings", default=SETTINGS_FILE, help="the running server's settings (make serve writes them)")
    models.add_argument("--management-url", help="TorchServe's management API (default: from --settings, else 127.0.0.1:8081)")
    models.add_argument("--inference-url", help="TorchServe's inference API itself, not the gateway (default: from --settings)")
    models.add_argument("--metrics-url", help="TorchServe's Prometheus metrics (default: from --settings, else 127.0.0.1:8082)")
    models.add_argument("--model-store", help="the model store (default: from --settings, else ./model_store)")
    models.add_argument("--gateway-status", help="the local gateway's status socket, to wait for its release (default: from --settings)")
    models.add_argument("--compose", metavar="COMMAND", help="the replicas of a compose stack, e.g. 'docker compose' "
                        "(with its -f files): the state is written to --model-store, which they mount (docs/DEPLOY.md)")
    models.add_argument("--replicas-dns", metavar="HOST:PORT", help="replicas that follow the state, one address each behind "
                        "HOST (a Kubernetes headless Service), asked on their inference PORT (docs/SCALING.md)")
    models.add_argument("--replicas", help="with --compose, its TorchServe services, comma-separated (default: every running torchserve*)")
    models.add_argument("--max-versions", type=int, default=versions.MAX_VERSIONS, help="versions served at once")
    commands = models.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every served version")
    p = commands.add_parser("add", help="archive a run, serve it beside the others, check its answers")
    p.add_argument("run", type=Path, help="the run folder (written by make train)")
    p.add_argument("--version", required=True, help="its version name, e.g. 2.0 (1-32 of A-Z a-z 0-9 . _ -)")
    p.add_argument("--workers", type=int, default=1, help="its TorchServe workers")
    p = commands.add_parser("canary", help="send a share of the unpinned callers to a version, sticky per caller")
    p.add_argument("version")
    p.add_argument("--percent", type=float, required=True, help="the share of unpinned callers, 0 (end the canary) to 100")
    p = commands.add_parser("promote", help="make a version the default (gated on held-out BLEU)")
    p.add_argument("version")
    p.add_argument("--force", action="store_true", help="promote even when the held-out BLEU gate refuses")
    p.add_argument("--margin", type=float, default=BLEU_MARGIN, help="held-out BLEU a new default may lose")
    commands.add_parser("rollback", help="make the previous default the default again")
    p = commands.add_parser("retire", help="unregister a version that is not the default")
    p.add_argument("version")
    p.add_argument("--force", action="store_true", help="retire even while callers pinned it in the last minutes")
    return top


def context(args: argparse.Namespace) -> Context:
    """The server's addresses and store: flags, else the running server's settings file, else the defaults."""
    settings = ServingSettings(gateway="local")
    path = Path(args.settings)
    if path.is_file():
        try:
            settings = ServingSettings(**json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            raise CommandError(f"{path} is not a settings file ({e}): pass --settings, or the URLs and --model-store") from None
    if args.compose or args.replicas_dns:
        store = Path(args.model_store or "model_store")
        replicas = Compose(shlex.split(args.compose), args.replicas.split(",") if args.replicas else None) if args.compose \
            else DnsReplicas(args.replicas_dns, store, settings.mar, settings.metrics_port)
        return Context(Replicated(replicas), "", store, first_mar=settings.mar, compose=replicas)
    status = Path(settings.log_dir) / "gateway" / "status.sock" if path.is_file() and settings.gateway == "local" else None
    return Context(Management(args.management_url or f"http://127.0.0.1:{settings.management_port}"),
                   (args.inference_url or settings.torchserve_url()).rstrip("/"), Path(args.model_store or settings.model_store),
                   first_mar=settings.mar, gateway_status=Path(args.gateway_status) if args.gateway_status else status,
                   metrics_url=args.metrics_url or f"http://127.0.0.1:{settings.metrics_port}/metrics")


def main(argv: Sequence[str] | None = None, ctx: Context | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "add" and args.workers < 1:
            raise CommandError(f"--workers {args.workers}: at least 1")
        ctx = ctx or context(args)
        ctx.max_versions = args.max_versions
        ctx.margin = getattr(args, "margin", ctx.margin)
        if args.command == "list":
            list_versions(ctx)
            return 0
        if not ctx.store.is_dir():
            raise CommandError(f"model store {ctx.store} not found: run from the project folder (make serve's) or pass --model-store")
        with versions.locked(ctx.store):  # one change at a time
            if args.command == "add":
                add(ctx, args.run, args.version, args.workers)
            elif args.command == "canary":
                canary(ctx, args.version, args.percent)
            elif args.command == "promote":
                promote(ctx, args.version, args.force)
            elif args.command == "rollback":
                rollback(ctx)
            elif args.command == "retire":
                retire(ctx, args.version, args.force)
    except VersionError as e:  # the store's lock is held by another command
        print(f"{PREFIX} {e}", file=sys.stderr)
        return 1
    except CommandError as e:
        print(f"{PREFIX} {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
