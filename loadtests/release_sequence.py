"""A second model version released under load: three caller groups at once while `gru-encoder models` adds
it, canaries it, is refused and then forced to promote it, rolls back and retires it.

    make smoke    # runs/smoke: seconds of training, a real second version that the BLEU gate refuses
    .venv/bin/python -m loadtests.release_sequence --serve --json release.json         # its own server
    .venv/bin/python -m loadtests.release_sequence --url http://127.0.0.1:8080         # make serve's

The groups, each open-loop at --rate requests/s, one short held-out text per request (hidden only), every
request with an X-Caller-ID from the same --callers ids (caller-0001, ...):
- pinned-1.0: POST /predictions/gru_encoder/1.0, throughout;
- pinned-2.0: POST /predictions/gru_encoder/2.0, from when `add` returns (after `retire`: a 404, counted apart);
- unpinned: POST /predictions/gru_encoder, cycling through the ids, so that the canary step sees every id
  --canary-visits times (it lasts until it has).
The pinned groups draw from the same ids as the unpinned one: a pinned caller whose id the canary picks
shows that a pin is never moved.

Each step runs one command (the console script's module, in a process of its own so that its work does not
slow the load threads), then holds --hold-s seconds; a request belongs to the step in which it was sent and
to its "change" phase while the command runs. A request whose kept-alive connection the gateway closed as it
went out (every change reloads nginx) is sent once more at once, as EncoderClient's retries would, and
counted as dropped. Which version answered is read from X-Model-Version and from
the body's model.version (they must agree). What a step expects of the unpinned callers is checked on its
hold only. A table and the checks are printed; --json writes the figures, --records every request; the exit
status is 1 when a check fails.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from gru_encoder.host.config_cli import config_from_args
from loadtests.torchserve_process import ROOT, TorchServe
from loadtests.workload import held_out_texts

MODEL = "gru_encoder"
BODY_VERSION = re.compile(rb'"version":"([^"]*)"')  # the first one of a native body is model.version


@dataclass
class ReleaseConfig:
    url: str = field(default="", metadata={"help": "the running server's gateway (make serve: http://127.0.0.1:8080)"})
    serve: bool = field(default=False, metadata={"help": "start a server like make serve's on free ports, 1.0 from runs/default"})
    run: str = field(default="runs/smoke", metadata={"help": "the run added as the second version (make smoke writes runs/smoke)"})
    base: str = field(default="1.0", metadata={"help": "the default version before the release"})
    version: str = field(default="2.0", metadata={"help": "the version released"})
    percent: int = field(default=25, metadata={"help": "the canary's share of the unpinned callers"})
    rate: float = field(default=25.0, metadata={"help": "requests/s of each group"})
    callers: int = field(default=1200, metadata={"help": "distinct X-Caller-ID values"})
    canary_visits: int = field(default=2, metadata={"help": "the canary holds until every caller was seen this many times"})
    canary_max_s: float = field(default=150.0, metadata={"help": "the canary's hold at most"})
    hold_s: float = field(default=4.0, metadata={"help": "seconds each other step holds after its command"})
    warmup_s: float = field(default=3.0, metadata={"help": "load before the first step, not counted"})
    min_rate: float = field(default=20.0, metadata={"help": "requests/s each group must reach in every step"})
    tolerance: float = field(default=5.0, metadata={"help": "points the canary's measured share may be off"})
    min_callers: int = field(default=1000, metadata={"help": "distinct callers the canary share is measured over, at least"})
    settings: str | None = field(default=None, metadata={"help": "gru-encoder models --settings (make serve's logs/serving-settings.json)"})
    management_url: str | None = field(default=None, metadata={"help": "gru-encoder models --management-url"})
    inference_url: str | None = field(default=None, metadata={"help": "gru-encoder models --inference-url (TorchServe itself)"})
    model_store: str | None = field(default=None, metadata={"help": "gru-encoder models --model-store"})
    json: str | None = field(default=None, metadata={"help": "write the figures and checks here"})
    records: str | None = field(default=None, metadata={"help": "write every request here, one JSON line each"})
    seed: int = field(default=0, metadata={"help": "the callers' order and the texts"})


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]  # gru-encoder models ... (empty: no command)
    exit: int  # the exit status the command must have
    unpinned: str  # what the unpinned callers get in the hold: "base", "new" or "canary"


def steps(cfg: ReleaseConfig) -> list[Step]:
    v = cfg.version
    return [Step("baseline", (), 0, "base"),
            Step("add", ("add", cfg.run, "--version", v, "--workers", "1"), 0, "base"),
            Step("canary", ("canary", v, "--percent", str(cfg.percent)), 0, "canary"),
            Step("promote (gated)", ("promote", v), 1, "canary"),  # refused: the canary goes on
            Step("promote --force", ("promote", v, "--force"), 0, "new"),
            Step("rollback", ("rollback",), 0, "base"),
            Step("retire (pinned)", ("retire", v), 1, "base"),  # refused: 2.0 has pinned traffic
            Step("retire --force", ("retire", v, "--force"), 0, "base")]


@dataclass
class Record:
    t: float  # monotonic time the request was sent
    group: str
    caller: str
    status: int  # 0: no HTTP answer
    version: str | None  # X-Model-Version
    body_version: str | None
    latency_s: float
    detail: str = ""  # a non-200 body's start, or the client error
    dropped: bool = False  # its first try met a closed connection and it was sent again


@dataclass
class Group:
    name: str
    path: str
    callers: Iterator[str]
    pinned: str | None  # the version its path pins
    started: float | None = None
    stopped: float | None = None


class Load:
    """The three groups' open-loop senders and what every request got."""

    def __init__(self, url: str, rate: float, texts: list[str]):
        self.url, self.rate, self.texts = url.rstrip("/"), rate, texts
        self.records: list[Record] = []
        self.pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="release")
        self.local = threading.local()
        self.threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self.groups: dict[str, Group] = {}

    def start(self, group: Group) -> None:
        stop = threading.Event()
        group.started = time.monotonic()
        self.groups[group.name] = group
        thread = threading.Thread(target=self._pace, args=(group, stop), daemon=True)
        self.threads[group.name] = (thread, stop)
        thread.start()

    def stop(self) -> None:
        for name, (thread, stop) in self.threads.items():
            stop.set()
            thread.join()
            self.groups[name].stopped = time.monotonic()
        self.pool.shutdown(wait=True)  # every request sent is answered (or times out) and recorded

    def _pace(self, group: Group, stop: threading.Event) -> None:
        """Send at `rate` on a fixed schedule, whatever the answers take (open loop: a slow server does not
        slow the callers down); more than a second behind, the schedule restarts from now."""
        rng = random.Random(group.name)
        due = time.monotonic()
        while not stop.is_set():
            self.pool.submit(self._send, group, next(group.callers), rng.choice(self.texts))
            due += 1.0 / self.rate
            late = time.monotonic() - due
            if late > 1.0:
                due = time.monotonic()
            elif late < 0:
                stop.wait(-late)

    def _send(self, group: Group, caller: str, text: str) -> None:
        session = getattr(self.local, "session", None) or self._new_session()
        sent, dropped = time.monotonic(), False
        for attempt in (1, 2):
            try:
                r = session.post(self.url + group.path, json={"texts": [text], "return": ["hidden"]},
                                 headers={"X-Caller-ID": caller}, timeout=30)
                break
            except requests.ConnectionError as e:
                # A kept-alive connection the gateway closed as the request went out (each release change
                # reloads nginx, whose old workers close their idle connections): sent once more at once, as
                # EncoderClient's retries would; counted as dropped. Encoding is idempotent.
                if attempt == 2:
                    self.records.append(Record(sent, group.name, caller, 0, None, None, time.monotonic() - sent, type(e).__name__, True))
                    return
                dropped = True
            except requests.RequestException as e:
                self.records.append(Record(sent, group.name, caller, 0, None, None, time.monotonic() - sent, type(e).__name__, dropped))
                return
        latency = time.monotonic() - sent
        found = BODY_VERSION.search(r.content[:200]) if r.status_code == 200 else None
        self.records.append(Record(sent, group.name, caller, r.status_code, r.headers.get("X-Model-Version"),
                                   found.group(1).decode() if found else None, latency,
                                   "" if r.status_code == 200 else r.text[:300], dropped))

    def _new_session(self) -> requests.Session:
        self.local.session = requests.Session()
        return self.local.session


@dataclass
class Ran:
    """One step as it ran: its times (monotonic) and its command's outcome."""

    step: Step
    t0: float
    changed: float  # the command returned; the hold starts
    t1: float
    exit: int | None = None
    output: str = ""


def run_command(location: list[str], argv: tuple[str, ...]) -> tuple[int, str]:
    """`gru-encoder models <location flags> <argv>` in a process of its own: its exit status and output."""
    cmd = [sys.executable, "-m", "gru_encoder.host.models_cli", "models", *location, *argv]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    return done.returncode, (done.stdout + done.stderr).strip()


@dataclass
class Drive:
    """What a sequence did: its steps as they ran, every request, and when each group sent (monotonic)."""

    ran: list[Ran]
    records: list[Record]
    windows: dict[str, tuple[float | None, float | None]]
    load_average: tuple[float, float] = (0.0, 0.0)  # the machine's 1-minute load at the start and the end: others' work shows


def drive(cfg: ReleaseConfig, url: str, location: list[str], say: Callable[[str], None] = print) -> Drive:
    """Run the steps under the three groups' load."""
    rng = random.Random(cfg.seed)
    ids = [f"caller-{i:04d}" for i in range(1, cfg.callers + 1)]
    order = rng.sample(ids, len(ids))
    texts = [t for t in held_out_texts() if len(t.split()) <= 8]

    def cycle() -> Iterator[str]:
        while True:
            yield from order

    def drawn(seed: int) -> Iterator[str]:
        pick = random.Random(seed)
        while True:
            yield pick.choice(ids)

    load = Load(url, cfg.rate, texts)
    pinned_new = Group(f"pinned-{cfg.version}", f"/predictions/{MODEL}/{cfg.version}", drawn(cfg.seed + 2), cfg.version)
    load.start(Group(f"pinned-{cfg.base}", f"/predictions/{MODEL}/{cfg.base}", drawn(cfg.seed + 1), cfg.base))
    load.start(Group("unpinned", f"/predictions/{MODEL}", cycle(), None))
    ran: list[Ran] = []
    load_start = os.getloadavg()[0]
    try:
        time.sleep(cfg.warmup_s)
        for step in steps(cfg):
            t0 = time.monotonic()
            code, output = run_command(location, step.argv) if step.argv else (None, "")
            changed = time.monotonic()
            say(f"{step.name}: {'gru-encoder models ' + ' '.join(step.argv) if step.argv else 'no command'}"
                + (f" -> exit {code} in {changed - t0:.1f} s" if step.argv else ""))
            if step.name == "add" and code == 0:
                load.start(pinned_new)  # only once the version is served
            if step.argv[:1] == ("canary",) and code == 0:
                hold_canary(load, changed, cfg, say)
            else:
                time.sleep(cfg.hold_s)
            ran.append(Ran(step, t0, changed, time.monotonic(), code, output))
    finally:
        load.stop()
    return Drive(ran, load.records, {g.name: (g.started, g.stopped) for g in load.groups.values()}, (load_start, os.getloadavg()[0]))


def hold_canary(load: Load, since: float, cfg: ReleaseConfig, say: Callable[[str], None]) -> None:
    """Until every caller was seen cfg.canary_visits times on the unpinned route since the canary began (or
    canary_max_s): stickiness is only seen on a caller that comes back."""
    deadline = since + cfg.canary_max_s
    while time.monotonic() < deadline:
        seen = Counter(r.caller for r in list(load.records) if r.group == "unpinned" and r.t >= since)
        if len(seen) >= cfg.callers and min(seen.values()) >= cfg.canary_visits:
            return
        time.sleep(0.5)
    say(f"canary: not every caller was seen {cfg.canary_visits} times within {cfg.canary_max_s:.0f} s")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100), None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def failed(r: Record, pinned: str | None) -> bool:
    """Not an answer from a served version: no 200, headers and body disagreeing, or a pin answered by another."""
    return r.status != 200 or r.version != r.body_version or (pinned is not None and r.version != pinned)


def group_figures(records: list[Record], seconds: float, pinned: str | None) -> dict[str, Any]:
    latencies = [r.latency_s * 1e3 for r in records]
    return {"requests": len(records), "rate": round(len(records) / seconds, 1) if seconds > 0 else None,
            "failed": sum(failed(r, pinned) for r in records), "dropped": sum(r.dropped for r in records),
            "p50_ms": _round(percentile(latencies, 50)), "p99_ms": _round(percentile(latencies, 99)),
            "versions": dict(Counter(r.version or str(r.status) for r in records))}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def report(cfg: ReleaseConfig, done: Drive) -> dict[str, Any]:
    """Per step and group: requests, rate, failures, p50/p99, versions; then the checks."""
    ran, records, windows = done.ran, done.records, done.windows
    pinned_of = {f"pinned-{cfg.base}": cfg.base, f"pinned-{cfg.version}": cfg.version, "unpinned": None}
    retired = next((s for s in ran if s.step.argv[:1] == ("retire",) and s.exit == 0), None)
    out_steps: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for s in ran:
        mine = [r for r in records if s.t0 <= r.t < s.t1]
        groups = {}
        for name, pinned in pinned_of.items():
            start, stop = windows.get(name, (None, None))
            if start is None:
                continue
            seconds = min(s.t1, stop or s.t1) - max(s.t0, start)
            rows = [r for r in mine if r.group == name]
            if seconds <= 0:
                continue
            if s is retired and pinned == cfg.version:  # the version goes away during this step
                groups[f"{name} (retiring)"] = group_figures([r for r in rows if r.t < s.changed], s.changed - s.t0, pinned)
                groups[f"{name} (retired)"] = group_figures([r for r in rows if r.t >= s.changed], s.t1 - s.changed, pinned)
            else:
                groups[name] = group_figures(rows, seconds, pinned)
        out_steps.append({"step": s.step.name, "command": " ".join(s.step.argv), "exit": s.exit,
                          "command_s": round(s.changed - s.t0, 2) if s.step.argv else None,
                          "seconds": round(s.t1 - s.t0, 1), "output": s.output[-600:], "groups": groups})

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    for s in ran:
        if s.step.argv:
            check(f"{s.step.name}: exit {s.step.exit}", s.exit == s.step.exit, f"exit {s.exit}: {s.output.splitlines()[-1][:200] if s.output else ''}")
    gated = next((s for s in ran if s.step.name == "promote (gated)"), None)
    if gated:
        check("promote refused by the BLEU gate", gated.exit == 1 and "BLEU" in gated.output, gated.output[-200:])
    # Pinned callers of a served version: none may fail. The retired version's from its retire's start on
    # are counted apart: it is going away.
    served = [r for r in records if r.group != "unpinned" and not (retired and r.group == f"pinned-{cfg.version}" and r.t >= retired.t0)]
    bad = [r for r in served if failed(r, pinned_of[r.group])]
    check("0 failed requests to pinned callers of a served version", not bad,
          f"{len(bad)} of {len(served)}" + (f"; first: {bad[0].group} {bad[0].status} {bad[0].version} {bad[0].detail[:120]}" if bad else ""))
    unpinned = [r for r in records if r.group == "unpinned" and ran and r.t >= ran[0].t0]
    bad = [r for r in unpinned if failed(r, None)]
    check("0 failed unpinned requests", not bad, f"{len(bad)} of {len(unpinned)}" + (f"; first: {bad[0].status} {bad[0].detail[:120]}" if bad else ""))
    if retired:
        after = [r for r in records if r.group == f"pinned-{cfg.version}" and r.t >= retired.changed]
        wrong = [r for r in after if r.status != 404 or f"version {cfg.version} is not served" not in r.detail]
        check(f"after retire, pins to {cfg.version} get 404 not_found", after and not wrong,
              f"{len(after) - len(wrong)} of {len(after)}" + (f"; e.g. {after[0].detail[:160]}" if after else ""))
    rates = [(st["step"], g, f["rate"]) for st in out_steps for g, f in st["groups"].items() if "(retir" not in g]
    low = [x for x in rates if x[2] is not None and x[2] < cfg.min_rate]
    check(f"every group >= {cfg.min_rate:g} requests/s in every step", not low,
          f"lowest {min((x[2] for x in rates if x[2] is not None), default=None)}/s" + (f"; below: {low}" if low else ""))
    canary = canary_figures(cfg, ran, records)
    if canary:
        check(f"canary share within {cfg.tolerance:g} points of {cfg.percent}% over >= {cfg.min_callers} callers",
              canary["callers"] >= cfg.min_callers and abs(canary["share_pct"] - cfg.percent) <= cfg.tolerance,
              f"{canary['share_pct']}% of {canary['callers']} callers on {cfg.version}")
        check("every caller one version throughout the canary", canary["callers_with_two_versions"] == 0,
              f"{canary['callers_with_two_versions']} of {canary['callers']} saw two; {canary['callers_seen_twice']} seen >= 2 times")
        check("pinned callers never moved by the canary", canary["pinned_moved"] == 0,
              f"{canary['pinned_moved']} of {canary['pinned_requests']} pinned requests answered by another version")
    for s in ran:
        if s.step.unpinned in ("base", "new") and s.exit in (None, s.step.exit):
            want = cfg.base if s.step.unpinned == "base" else cfg.version
            held = [r for r in records if r.group == "unpinned" and s.changed <= r.t < s.t1 and r.status == 200]
            other = Counter(r.version for r in held if r.version != want)
            check(f"{s.step.name}: every unpinned caller on {want}", held and not other,
                  f"{len(held) - sum(other.values())} of {len(held)} answers from {want}" + (f"; others {dict(other)}" if other else ""))
    dropped = [r for r in records if r.dropped and ran and r.t >= ran[0].t0]
    in_command = sum(any(s.t0 <= r.t < s.changed for s in ran) for r in dropped)
    machine = {"cpus": os.cpu_count(), "load_1min_start": round(done.load_average[0], 2), "load_1min_end": round(done.load_average[1], 2)}
    return {"config": asdict(cfg), "machine": machine, "dropped": {"requests": len(dropped), "during_a_command": in_command},
            "steps": out_steps, "canary": canary, "checks": checks, "ok": all(c["ok"] for c in checks)}


def canary_figures(cfg: ReleaseConfig, ran: list[Ran], records: list[Record]) -> dict[str, Any] | None:
    """Over the holds while the canary is on (its own and the refused promote's): each distinct unpinned
    caller's versions, the share on the canary, and whether any pinned request was moved."""
    holds = [(s.changed, s.t1) for s in ran if s.step.unpinned == "canary" and s.exit == s.step.exit]
    if not holds:
        return None
    inside = [r for r in records if any(a <= r.t < b for a, b in holds) and r.status == 200]
    seen: dict[str, set[str | None]] = defaultdict(set)
    visits: Counter[str] = Counter()
    for r in inside:
        if r.group == "unpinned":
            seen[r.caller].add(r.version)
            visits[r.caller] += 1
    on_canary = sum(vs == {cfg.version} for vs in seen.values())
    pinned = [r for r in inside if r.group != "unpinned"]
    return {"callers": len(seen), "share_pct": round(100 * on_canary / max(1, len(seen)), 1), "on_canary": on_canary,
            "callers_with_two_versions": sum(len(vs) > 1 for vs in seen.values()),
            "callers_seen_twice": sum(n >= 2 for n in visits.values()),
            "visits_min": min(visits.values(), default=0), "unpinned_requests": sum(visits.values()),
            "pinned_requests": len(pinned), "pinned_moved": sum(r.version != r.group.removeprefix("pinned-") for r in pinned)}


def table(result: dict[str, Any]) -> str:
    """The figures as a fixed-width table, then the canary's figures and the checks."""
    rows = [("step", "exit", "cmd s", "group", "requests", "req/s", "failed", "dropped", "p50 ms", "p99 ms", "answered by")]
    for st in result["steps"]:
        for i, (g, f) in enumerate(st["groups"].items()):
            rows.append((st["step"] if i == 0 else "", "" if i or st["exit"] is None else str(st["exit"]),
                         "" if i or st["command_s"] is None else f"{st['command_s']:.1f}", g, str(f["requests"]),
                         f"{f['rate']}", str(f["failed"]), str(f["dropped"]), f"{f['p50_ms']}", f"{f['p99_ms']}",
                         " ".join(f"{v}:{n}" for v, n in sorted(f["versions"].items()))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(f"machine: {result['machine']['cpus']} CPUs, 1-minute load {result['machine']['load_1min_start']} at the start, "
                 f"{result['machine']['load_1min_end']} at the end")
    lines.append(f"dropped: {result['dropped']['requests']} requests met a closed kept-alive connection and were sent again "
                 f"({result['dropped']['during_a_command']} of them while a command ran)")
    if result["canary"]:
        lines.append("canary: " + ", ".join(f"{k} {v}" for k, v in result["canary"].items()))
    lines += [f"{'PASS' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}" for c in result["checks"]]
    return "\n".join(lines)


def write_records(path: str, done: Drive) -> None:
    """One JSON line per request, in the order sent, with its step and phase (change: while the command ran)."""
    with open(path, "w") as f:
        for r in sorted(done.records, key=lambda r: r.t):
            s = next((s for s in done.ran if s.t0 <= r.t < s.t1), None)
            where = {"step": s.step.name if s else "warm-up", "phase": None if s is None else "change" if r.t < s.changed else "hold"}
            f.write(json.dumps({**where, **asdict(r)}) + "\n")


def serve_locally(work: Path) -> TorchServe:
    """A server as make serve starts it (the local gateway, the settings' workers), on free ports, with 1.0
    from runs/default in its own model store."""
    from training.archive import ArchiveConfig, build_archive  # torch: only here

    store = work / "model_store"
    store.mkdir()
    build_archive(ArchiveConfig(run_dir=str(ROOT / "runs" / "default"), export_path=str(store)))
    return TorchServe(store, work / "server", gateway="local").start()


def settings_file(ts: TorchServe) -> Path:
    """The settings a server's launcher wrote (make serve: logs/serving-settings.json), from which `gru-encoder
    models` finds its ports, its store and the gateway's status socket (to wait until a change is in effect)."""
    return Path(ts.settings.log_dir) / "serving-settings.json"


def cli_location(cfg: ReleaseConfig) -> list[str]:
    flags = {"--settings": cfg.settings, "--management-url": cfg.management_url, "--inference-url": cfg.inference_url,
             "--model-store": cfg.model_store}
    return [x for k, v in flags.items() if v for x in (k, v)]


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(ReleaseConfig, argv)
    if not Path(cfg.run).joinpath("config.json").is_file():
        sys.exit(f"{cfg.run}/config.json not found: make smoke writes runs/smoke, or pass --run RUN_DIR")
    if bool(cfg.url) == cfg.serve:
        sys.exit("pass either --url (a running server's gateway, e.g. make serve's http://127.0.0.1:8080) or --serve")
    cfg.run = str(Path(cfg.run).resolve())
    with tempfile.TemporaryDirectory(prefix="release-") as work:
        ts = serve_locally(Path(work)) if cfg.serve else None
        try:
            if ts:  # what its launcher wrote, as make serve's: ports, store and the gateway's status socket
                cfg.settings = str(settings_file(ts))
            done = drive(cfg, ts.url if ts else cfg.url, cli_location(cfg))
        finally:
            if ts:
                ts.stop()
    result = report(cfg, done)
    print(table(result))
    if cfg.records:
        write_records(cfg.records, done)
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
