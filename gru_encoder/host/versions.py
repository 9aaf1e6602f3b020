"""The served versions of the model: `<model_store>/versions.json`, the one record of what is served.

Each version is an immutable archive (`gru_encoder.mar` for 1.0, `gru_encoder-<version>.mar` for the
others, training/archive.py) with its own metrics. The state holds every served version (its archive,
workers, the run's held-out metrics, the training date, the weights' sha256, when it was added), the
default (what the unpinned routes answer with) and the earlier defaults, newest last (for rollback).
The launcher registers every version of it at start and then enforces its default (TorchServe's own
`defaultVersion` at start-up is not reliable, pytorch/serve#2744); `gru-encoder models`
(host/models_cli.py) changes it, and the handler reads it for GET /info and GET /v1/models.

The state also holds the canary (a version and the percent of unpinned callers sent to it) and a generation,
counted up at every change. Every save writes the gateway's release file beside it
(<model_store>/release/gateway.conf, api/release_conf.py): the gateway sends each unpinned request to the
version it names, so a promote, a rollback or a canary takes effect for callers at the gateway, in one
reload, whatever each TorchServe's own default is.

No file means one version, 1.0, from the settings' archive (what `make archive` writes). Written
atomically (a temporary file in the same folder, then a rename), so a reader sees the old state or the
new one, never half of one. Standard library only: the launcher and the handler read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from gru_encoder.api.release_conf import RELEASE_DIR, RELEASE_FILE, generation_of, percent_text, release_conf, routing
from gru_encoder.api.routes import MODEL_NAME, VERSION_PATTERN

STATE_FILE = "versions.json"
FORMAT = "gru_encoder.versions/1"
FIRST_VERSION = "1.0"  # the version of the settings' archive (make archive)
MAX_VERSIONS = 3  # versions served at once: each holds its own workers' memory
_VERSION = re.compile(VERSION_PATTERN)
QUALITY_METRIC = "test_bleu"  # held-out BLEU of the run's metrics.json: what promote compares


class VersionError(ValueError):
    """A version name, a state file or a change to it that cannot be; the message says how to fix it."""


def check_version(version: str) -> str:
    """The version name itself, or VersionError: 1-32 of A-Z a-z 0-9 . _ -, starting with a letter or digit."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise VersionError(f"version {str(version)[:40]!r} is not a version name: 1-32 characters of A-Z a-z 0-9 . _ -, "
                           "starting with a letter or digit (e.g. 2.0)")
    return version


def mar_name(version: str, first_mar: str = f"{MODEL_NAME}.mar") -> str:
    """The archive's file name in the model store: the settings' archive for 1.0, gru_encoder-<version>.mar else."""
    return first_mar if check_version(version) == FIRST_VERSION else f"{MODEL_NAME}-{version}.mar"


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class Version:
    """One served version: its archive in the model store and what is known of the run it came from."""

    version: str
    mar: str
    workers: int | None = None  # None: the serving settings' workers
    weights_sha256: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # the run's metrics.json (held-out BLEU: test_bleu)
    trained_at: str | None = None  # when the run's config.json was written (UTC, ISO 8601)
    added_at: str | None = None
    run_dir: str | None = None

    @property
    def bleu(self) -> float | None:
        value = self.metrics.get(QUALITY_METRIC)
        return float(value) if isinstance(value, (int, float)) else None


@dataclass(frozen=True)
class Canary:
    """A share of the unpinned callers sent to a version that is not the default, sticky per caller."""

    version: str
    percent: float  # of unpinned callers, 0 < percent <= 100, at most two decimals (nginx's split_clients)


@dataclass(frozen=True)
class State:
    versions: tuple[Version, ...]
    default: str
    previous_defaults: tuple[str, ...] = ()  # newest last
    saved: bool = True  # False: no file yet (the implicit one version 1.0)
    canary: Canary | None = None
    generation: int = 0  # counted up at every saved change (the release file names it)
    pending: tuple[str, ...] = ()  # versions being added: replicas load them, the gateway sends nobody to them yet

    def get(self, version: str) -> Version | None:
        return next((v for v in self.versions if v.version == version), None)

    def names(self) -> list[str]:
        return [v.version for v in self.versions]

    def with_version(self, entry: Version, max_versions: int = MAX_VERSIONS) -> State:
        """This state with one more version, or VersionError when it exists or the cap is reached."""
        check_version(entry.version)
        if self.get(entry.version) is not None:
            raise VersionError(f"version {entry.version} is already served: choose another version name "
                               f"(served: {', '.join(self.names())})")
        if len(self.versions) >= max_versions:
            raise VersionError(f"{len(self.versions)} versions are served, the most at once ({max_versions}): retire one first "
                               f"(gru-encoder models retire VERSION; served: {', '.join(self.names())}, default {self.default})")
        return replace(self, versions=(*self.versions, entry), saved=True)

    def with_canary(self, version: str, percent: float) -> State:
        """This state with `percent` of the unpinned callers on `version` (0 ends the canary)."""
        self.require(version)
        if not isinstance(percent, (int, float)) or not 0 <= percent <= 100 or round(percent, 2) != percent:
            raise VersionError(f"--percent {percent}: a share of the unpinned callers from 0 (no canary) to 100, "
                               "at most two decimals (e.g. 25 or 2.5)")
        if percent == 0:
            return replace(self, canary=None, saved=True)
        if version == self.default:
            raise VersionError(f"version {version} is the default: every unpinned caller is on it already; a canary is "
                               "another version (or end the canary: --percent 0)")
        return replace(self, canary=Canary(version, float(percent)), saved=True)

    def promoted(self, version: str) -> State:
        """This state with `version` the default, the old default remembered for rollback; a canary ends."""
        self.require(version)
        if version == self.default:
            return replace(self, canary=None) if self.canary else self
        return replace(self, default=version, previous_defaults=(*self.previous_defaults, self.default), saved=True, canary=None)

    def rolled_back(self) -> State:
        """This state with the newest earlier default that is still served the default again."""
        earlier = [v for v in self.previous_defaults if self.get(v) is not None and v != self.default]
        if not earlier:
            raise VersionError(f"no earlier default is still served to roll back to (default {self.default}): "
                               "promote a version instead (gru-encoder models promote VERSION)")
        back = earlier[-1]
        rest = tuple(self.previous_defaults[: len(self.previous_defaults) - 1 - self.previous_defaults[::-1].index(back)])
        return replace(self, default=back, previous_defaults=rest, saved=True, canary=None)

    def without(self, version: str) -> State:
        """This state with `version` retired, or VersionError while it is the default."""
        self.require(version)
        if version == self.default:
            raise VersionError(f"version {version} is the default: promote another version first "
                               f"(gru-encoder models promote VERSION, or rollback)")
        if self.canary and self.canary.version == version:
            raise VersionError(f"version {version} is the canary ({percent_text(self.canary.percent)}% of unpinned callers): "
                               f"end the canary first (gru-encoder models canary {version} --percent 0)")
        return replace(self, versions=tuple(v for v in self.versions if v.version != version),
                       previous_defaults=tuple(v for v in self.previous_defaults if v != version), saved=True)

    def require(self, version: str) -> Version:
        entry = self.get(check_version(version))
        if entry is None:
            raise VersionError(f"version {version} is not served (served: {', '.join(self.names())}): "
                               "gru-encoder models list shows them")
        return entry

    def canary_percent(self, version: str) -> float:
        """The share of unpinned callers `version` answers: the canary's, the rest for the default, else 0."""
        share = self.canary.percent if self.canary else 0.0
        return share if self.canary and self.canary.version == version else (100.0 - share if version == self.default else 0.0)

    def release(self) -> str:
        """The gateway's release file for this state (api/release_conf.py)."""
        canary = self.canary
        return release_conf(self.default, canary.version if canary else None, canary.percent if canary else 0.0, self.generation,
                            [v for v in self.names() if v not in self.pending])

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "model": MODEL_NAME, "generation": self.generation, "default": self.default,
                "canary": asdict(self.canary) if self.canary else None, "pending": list(self.pending),
                "previous_defaults": list(self.previous_defaults),
                "versions": [asdict(v) for v in self.versions]}


def state_path(model_store: str | Path) -> Path:
    return Path(model_store) / STATE_FILE


def load(model_store: str | Path, first_mar: str = f"{MODEL_NAME}.mar") -> State:
    """The state of this model store; without a state file the one version 1.0 of `first_mar`."""
    path = state_path(model_store)
    if not path.is_file():
        return State((describe_mar(Path(model_store) / first_mar, FIRST_VERSION),), FIRST_VERSION, saved=False)
    try:
        data = json.loads(path.read_text("utf-8"))
        if data.get("format") != FORMAT:
            raise VersionError(f"{path}: format {data.get('format')!r} is not {FORMAT!r}")
        versions = tuple(Version(**{**v, "metrics": dict(v.get("metrics") or {})}) for v in data["versions"])
        canary = Canary(data["canary"]["version"], float(data["canary"]["percent"])) if data.get("canary") else None
        state = State(versions, data["default"], tuple(data.get("previous_defaults", ())), canary=canary,
                      generation=int(data.get("generation", 0)), pending=tuple(data.get("pending", ())))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VersionError(f"{path} is not a readable versions file ({type(e).__name__}: {str(e)[:200]}): restore it from a "
                           f"backup, or delete it to serve only version 1.0 of {first_mar}") from None
    for v in versions:
        check_version(v.version)
    if not versions or state.get(state.default) is None:
        raise VersionError(f"{path}: the default {state.default!r} is not among its versions ({', '.join(state.names())}): "
                           "fix the file, or delete it to serve only version 1.0")
    if canary and (state.get(canary.version) is None or canary.version == state.default or not 0 < canary.percent <= 100):
        raise VersionError(f"{path}: the canary {canary.version!r} at {canary.percent}% is not a served version other than the "
                           "default at 0-100%: fix the file (or remove its canary)")
    return state


def release_path(model_store: str | Path) -> Path:
    """The gateway's release file (api/release_conf.py), in a folder of its own that the gateway mounts."""
    return Path(model_store) / RELEASE_DIR / RELEASE_FILE


def _write_atomically(path: Path, text: str) -> None:
    """A temporary file beside `path`, flushed, then renamed over it: a reader sees the old text or the new."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # the gateway's nginx (another user) reads the release file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_release(model_store: str | Path, state: State) -> int:
    """The gateway's release file of this state, written atomically; the generation the file names. A file that
    routes the same is left as it is (a change that moves no caller costs the gateway no reload)."""
    path = release_path(model_store)
    path.parent.mkdir(exist_ok=True)
    text = state.release()
    old = path.read_text("utf-8") if path.is_file() else None
    if old is not None and routing(old) == routing(text) and generation_of(old) is not None:
        return generation_of(old)  # type: ignore[return-value]
    _write_atomically(path, text)
    return state.generation


def save(model_store: str | Path, state: State) -> State:
    """Write the state, one generation on, then the gateway's release file; the state as saved."""
    state = replace(state, generation=state.generation + 1, saved=True)
    _write_atomically(state_path(model_store), json.dumps(state.to_json(), indent=2) + "\n")
    write_release(model_store, state)
    return state


def release_generation(model_store: str | Path) -> int | None:
    """The generation the gateway's release file names: what the gateway runs once it has loaded it."""
    path = release_path(model_store)
    return generation_of(path.read_text("utf-8")) if path.is_file() else None


@contextlib.contextmanager
def locked(model_store: str | Path) -> Iterator[None]:
    """Hold the store's lock (an flock on <model_store>/.versions.lock) while the state is read, changed and
    written, so that two `gru-encoder models` at once do not overwrite each other's change."""
    path = Path(model_store) / f".{STATE_FILE}.lock"
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VersionError(f"another gru-encoder models command is changing {state_path(model_store)} "
                               f"(it holds {path}): wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def changed_archives(model_store: str | Path, state: State) -> list[str]:
    """The versions whose archive no longer holds the weights the state recorded for them (a version is
    immutable: `make archive` after `make train` rewrites gru_encoder.mar, version 1.0), each said with its fix."""
    problems = []
    for v in state.versions:
        found = describe_mar(Path(model_store) / v.mar, v.version).weights_sha256
        if v.weights_sha256 and found and found != v.weights_sha256:
            problems.append(f"{Path(model_store) / v.mar} holds weights {found[:12]}…, but version {v.version} was recorded with "
                            f"{v.weights_sha256[:12]}… (a version never changes): rebuild it from the run it came from, and add "
                            f"a new run as a new version (gru-encoder models add RUN --version V)")
    return problems


def describe_mar(mar: Path, version: str, workers: int | None = None) -> Version:
    """What an archive says of itself: its weights' sha256 (config.json), the run's metrics (metrics.json,
    when the archive holds one) and the training date (config.json's time in the archive)."""
    entry = Version(version, mar.name, workers)
    try:
        with zipfile.ZipFile(mar) as z:
            names = set(z.namelist())
            config = json.loads(z.read("config.json")) if "config.json" in names else {}
            metrics = json.loads(z.read("metrics.json")) if "metrics.json" in names else {}
            # A zip entry's time is the archiving machine's local time.
            stamp = datetime(*z.getinfo("config.json").date_time).astimezone(timezone.utc) if "config.json" in names else None
    except (OSError, zipfile.BadZipFile, ValueError):
        return entry  # not built yet, or unreadable: the launcher's own checks say so
    sha = (config.get("files", {}).get("weights", {}) or {}).get("sha256")
    return replace(entry, weights_sha256=sha, metrics=metrics, trained_at=stamp.isoformat() if stamp else None)


def describe_run(run_dir: Path, version: str, mar: str, workers: int | None) -> Version:
    """A new version's entry from its run folder (config.json's weights hash and time, metrics.json)."""
    config = json.loads((run_dir / "config.json").read_text("utf-8"))
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text("utf-8")) if metrics_file.is_file() else {}
    trained = datetime.fromtimestamp((run_dir / "config.json").stat().st_mtime, timezone.utc).replace(microsecond=0).isoformat()
    return Version(version, mar, workers, config["files"]["weights"]["sha256"], metrics, trained, now(), str(run_dir))


def summary(state: State) -> dict[str, Any]:
    """What GET /info says of the versions: each one's name, weights, held-out BLEU, training date and share of
    the unpinned callers, the default and the canary."""
    return {"default_version": state.default,
            "canary": {"version": state.canary.version, "percent": state.canary.percent} if state.canary else None,
            "versions": [{"version": v.version, "default": v.version == state.default, "weights_sha256": v.weights_sha256,
                          "test_bleu": v.bleu, "trained_at": v.trained_at, "workers": v.workers,
                          "unpinned_percent": state.canary_percent(v.version)} for v in state.versions]}
