"""The gateway under abuse, through the real stack: a table of malformed requests over a raw socket (every
answer JSON in the project's shape), the key sent every wrong way and never found in any log, what the
most expensive requests cost a worker, one key's sixteen worst requests in parallel against another
key's good ones, and log rotation on every container."""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time

import pytest
import requests

from tests.e2e.gateway import ONE_TEXT, PREDICT, bearer, size_bytes
from tests.e2e.malformed import CASES, send
from tests.e2e.reference import parse_error, status_of_type
from tests.e2e.report import Report
from tests.e2e.stack import LOG_SETTINGS, REPLICAS, Stack

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]

# The requests that cost a worker the most (64 texts x 10,000 characters, under the gateway's 2 MB):
# U+FDFA (18 characters under NFKC: once 3.6 s of a worker), CJK and Hangul (a token a character),
# accents, punctuation; all with truncate.
EXPENSIVE = {"U+FDFA": "\ufdfa", "CJK": "\u4e00", "Hangul": "\uac00", "accents": "\u00e9", "punctuation": "!"}
# TorchServe's own log files in its container (log4j2: access_log, model_log, ts_log, the metrics).
TS_LOGS = "/home/model-server/logs"


def expensive(char: str) -> bytes:
    """The body as UTF-8 (1.9 MB for a 3-byte character: under the gateway's 2 MB; JSON's \\u escapes would not be)."""
    return json.dumps({"texts": [char * 10_000] * 64, "truncate": True, "return": ["hidden"]}, ensure_ascii=False).encode()


def add_keys(stack: Stack, n: int) -> list[str]:
    """n new keys appended to the secret file and taken up with `gateway-entrypoint --reload`."""
    keys = [secrets.token_urlsafe(32) for _ in range(n)]
    with stack.key_file.open("a") as f:
        f.write("".join(k + "\n" for k in keys))
    stack.added_keys.extend(keys)
    assert stack.project.exec("gateway", "gateway-entrypoint", "--reload").returncode == 0
    time.sleep(1)
    return keys


def worker_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds (user + system) of each TorchServe worker process of both replicas, from /proc inside
    their containers, by "<replica> <pid>"."""
    script = ("import os\n"
              "for p in filter(str.isdigit, os.listdir('/proc')):\n"
              "    try:\n"
              "        cmd = open(f'/proc/{p}/cmdline', 'rb').read()\n"
              "        f = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()\n"
              "    except OSError:\n"
              "        continue\n"
              "    if b'model_service_worker.py' in cmd and int(p) != os.getpid():\n"
              "        print(p, (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK'))\n")
    cpu = {}
    for replica in REPLICAS:
        out = stack.project.exec(replica, "python3", "-c", script).stdout
        cpu.update({f"{replica} {pid}": float(seconds) for pid, seconds in (line.split() for line in out.splitlines())})
    return cpu


def test_malformed_requests_get_the_projects_json(stack: Stack, report: Report) -> None:
    wrong = []
    for case in CASES:
        raw = case.raw.replace(b"KEY", stack.api_key.encode())
        reply = send(stack.port, raw)
        # The test key's rate (GATEWAY_SETTINGS: 5 r/s, burst 10) is not what this table tests: a case
        # that met it is sent again after the Retry-After pause.
        for _ in range(5):
            if not (reply.status == 429 and case.status != 429 and b'"rate_limited"' in reply.body):
                break
            time.sleep(1.2)
            reply = send(stack.port, raw)
        try:
            body = json.loads(reply.body)
            error = parse_error(body) if case.type else None
        except ValueError as e:
            wrong.append(f"{case.name}: {reply.status}, not the project's JSON ({e}): {reply.body[:120]!r}")
            continue
        if reply.status != case.status or (error is not None and error.type != case.type):
            wrong.append(f"{case.name}: expected {case.status} {case.type}, got {reply.status} {reply.body[:160]!r}")
        elif error is not None and reply.status is not None and not (error.code == reply.status and status_of_type(reply.status, error.type)):
            wrong.append(f"{case.name}: status {reply.status} with body code {error.code} type {error.type}")
        elif reply.status is not None and not reply.headers.get("content-type", "").startswith("application/json"):
            wrong.append(f"{case.name}: Content-Type {reply.headers.get('content-type')}")
    assert not wrong, "\n".join(wrong)
    counts: dict[str, int] = {}
    for case in CASES:
        counts[f"{case.status or 'HTTP/0.9'} {case.type or 'ok'}"] = counts.get(f"{case.status or 'HTTP/0.9'} {case.type or 'ok'}", 0) + 1
    report.promise(f"{len(CASES)} malformed or unusual requests over a raw socket, every answer the project's JSON: "
                   + ", ".join(f"{n} x {k}" for k, n in sorted(counts.items())))


def test_a_key_sent_the_wrong_way_is_never_logged(stack: Stack, report: Report) -> None:
    """The key in a query string (six names), a path, a cookie, headers of other names: refused or
    ignored, and found in no container's log nor in TorchServe's log files."""
    key = add_keys(stack, 1)[0]  # its own: the rate limit of the test's keys is low
    url = stack.url
    sent = []
    for name in ("api_key", "key", "token", "access_token", "apikey", "x-api-key"):
        for path in (PREDICT, "/ping", "/health", "/nowhere"):
            r = requests.post(f"{url}{path}?{name}={key}", json=ONE_TEXT, timeout=30)
            sent.append(r.status_code)
            error = parse_error(r.json())
            assert r.status_code == 400 and error.type == "bad_request" and "query" in error.message, r.text
    for path in (f"{PREDICT}/{key}", f"/{key}", f"/ping/{key}"):
        sent.append(requests.post(f"{url}{path}", json=ONE_TEXT, timeout=30).status_code)
    headers = [{"Cookie": f"api_key={key}"}, {"Api-Key": key}, {"X-Auth-Token": key}, {"Token": key},
               {"X-Access-Token": key}, {"Authorization": f"Token {key}"}, {"Proxy-Authorization": f"Bearer {key}"}]
    for extra in headers:
        for path in (PREDICT, "/ping"):
            sent.append(requests.post(f"{url}{path}", json=ONE_TEXT, headers=extra, timeout=30).status_code)
    # With the key where it belongs too, so that the other headers travel as far as they can.
    for extra in headers:
        time.sleep(0.25)  # under the test's rate of 5r/s
        with_key = {"X-API-Key": key} if "Authorization" in extra else bearer(key)
        r = requests.post(f"{url}{PREDICT}", json=ONE_TEXT, headers={**with_key, **extra}, timeout=30)
        assert r.status_code == 200, r.text
    project = stack.project
    logs = {"gateway (docker logs)": project.logs(stack.gateway),
            **{f"{replica} (docker logs)": project.logs(cid) for replica, cid in zip(REPLICAS, stack.replicas)}}
    files = "".join(project.exec(replica, "sh", "-c", f"ls {TS_LOGS}; cat {TS_LOGS}/*.log").stdout for replica in REPLICAS)
    assert "access_log.log" in files, files[:500]
    logs["torchserve's log files"] = files
    found = [where for where, text in logs.items() if key in text]
    assert not found, f"the API key is in: {found}"
    report.promise(f"the key sent {len(sent) + len(headers)} wrong ways (query strings under 6 names on 4 routes: 400 "
                   "bad_request; in paths; a cookie; 6 other headers): not in the gateway's or TorchServe's docker "
                   f"logs, nor in TorchServe's log files ({', '.join(sorted({n for n in files.split() if n.endswith('.log')}))})")


def test_the_most_expensive_requests_cost_a_worker_little(stack: Stack, report: Report) -> None:
    key = add_keys(stack, 1)[0]
    session = requests.Session()
    figures = []
    for name, char in EXPENSIVE.items():
        body = expensive(char)
        costs = []
        for _ in range(3):
            time.sleep(0.25)  # under the test's per-key rate
            before = worker_cpu(stack)
            r = session.post(stack.url + PREDICT, data=body, headers={**bearer(key), "Content-Type": "application/json"}, timeout=60)
            after = worker_cpu(stack)
            assert set(after) == set(before), "a worker restarted"
            assert r.status_code in (200, 413), r.text[:300]
            costs.append(sum(after.values()) - sum(before.values()))
        status = r.status_code if r.status_code == 200 else f"{r.status_code} {r.json()['type']}"
        figures.append(f"{name} ({len(body):,} bytes) -> {status}, {1000 * max(costs):.0f} ms")
        # The bench figure is the bound (docs/RELIABILITY.md); this catches a return of the 3.6 s.
        assert max(costs) < 1.0, figures[-1]
    report.promise("worker CPU per request (64 texts x 10,000 characters, truncate; max of 3, /proc ticks of 10 ms): "
                   + "; ".join(figures))


def test_echoing_bodies_get_a_small_error_and_cost_no_worker(stack: Stack, report: Report) -> None:
    """A 1.1 MB body whose unknown field's name is 280,000 emoji, and a 1 MB `model` on /v1/embeddings,
    each sent three times: a 4xx under 4 KB in well under a second (once, a 6.7 MB echo lost the worker and
    every request batched with it); another key's requests meanwhile all 200 and under 200 ms; no worker
    restarted."""
    attacker, good = add_keys(stack, 2)
    bodies = {
        "field name": (PREDICT, json.dumps({"texts": ["a"], "\U0001F600" * 280_000: 1}, ensure_ascii=False).encode()),
        "model": ("/v1/embeddings", json.dumps({"input": "a", "model": "m" * 1_000_000}).encode()),
    }
    before = worker_cpu(stack)
    figures, good_times, good_statuses = [], [], []
    session, other = requests.Session(), requests.Session()
    for name, (path, body) in bodies.items():
        for _ in range(3):
            time.sleep(0.3)  # under the test's per-key rate
            start = time.monotonic()
            r = session.post(stack.url + path, data=body, headers={**bearer(attacker), "Content-Type": "application/json"}, timeout=30)
            took = time.monotonic() - start
            assert 400 <= r.status_code < 500 and len(r.content) < 4096 and took < 1.0, (r.status_code, len(r.content), took)
            r.json()  # whole, valid JSON
            start = time.monotonic()
            g = other.post(stack.url + PREDICT, json=ONE_TEXT, headers=bearer(good), timeout=30)
            good_times.append(time.monotonic() - start)
            good_statuses.append(g.status_code)
        figures.append(f"{name} ({len(body):,} bytes) -> {r.status_code}, {len(r.content):,} bytes, {1000 * took:.0f} ms")
    after = worker_cpu(stack)
    assert set(after) == set(before), "a worker restarted"
    assert set(good_statuses) == {200} and max(good_times) < 0.2, (good_statuses, good_times)
    report.promise("echoing bodies through the gateway: " + "; ".join(figures) + f"; another key meanwhile: {len(good_statuses)} x 200, "
                   f"slowest {1000 * max(good_times):.0f} ms; no worker restarted")


def test_one_keys_worst_requests_leave_another_keys_answers_fast(stack: Stack, report: Report) -> None:
    """Sixteen callers with one key send the most expensive admitted request over and over; a caller with
    another key sends one good request every 0.1 s. The second caller: every answer a 200, its latency
    printed (client and gateway); no worker restarts. The first: 200s, and 429s when its requests in
    flight or its rate pass the key's limits."""
    attacker, good = add_keys(stack, 2)
    project = stack.project
    # The deployment's default rate (the test's 5r/s would hide the in-flight limit behind the rate).
    reload = ["exec", "-T", "-e", "GATEWAY_RATE=50r/s", "-e", "GATEWAY_BURST=100", "gateway", "gateway-entrypoint", "--reload"]
    assert project.compose(*reload, check=False).returncode == 0
    time.sleep(1)
    try:
        _sixteen_against_one(stack, attacker, good, report)
    except BaseException:
        for container in (stack.gateway, stack.torchserve):
            state = project.inspect(container)["State"]
            report.note(f"{project.name(container)}: {json.dumps({k: state.get(k) for k in ('Status', 'ExitCode', 'OOMKilled', 'StartedAt', 'Error')})}, "
                        f"restarts {project.inspect(container)['RestartCount']}")
            report.note("\n".join(line for line in project.logs(container).splitlines()[-400:]
                                   if not line.startswith('{"time"') and "limiting" not in line)[-3000:])
        raise
    finally:
        assert project.exec("gateway", "gateway-entrypoint", "--reload").returncode == 0  # the test's settings again
        time.sleep(1)


# The sixteen callers, in a process of their own (16 threads beside the measuring client in one process
# would hold its GIL): argv url key seconds; prints {"status message": count} as JSON at the end.
ATTACKER = """
import json, sys, threading, time, collections, requests
url, key, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
body = json.dumps({"texts": ["\\uac00" * 10000] * 64, "truncate": True, "return": ["hidden"]}, ensure_ascii=False).encode()
counts, stop = collections.Counter(), time.monotonic() + seconds
def loop():
    session = requests.Session()
    while time.monotonic() < stop:
        r = session.post(url, data=body, headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"}, timeout=60)
        message = r.json().get("message", "") if r.status_code != 200 else ""
        counts[f"{r.status_code}" + (" in flight" if "in flight" in message else " rate" if r.status_code == 429 else "")] += 1
        if r.status_code == 429:
            time.sleep(0.1)  # a tenth of Retry-After: 16 spinning clients would take this machine's 2 cores
threads = [threading.Thread(target=loop) for _ in range(16)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(counts))
"""


def _sixteen_against_one(stack: Stack, attacker: str, good: str, report: Report) -> None:
    pids = set(worker_cpu(stack))
    seconds = 15
    attack = subprocess.Popen([sys.executable, "-c", ATTACKER, stack.url + PREDICT, attacker, str(seconds + 2)],
                              stdout=subprocess.PIPE, text=True)
    latencies, statuses, ids = [], [], set()
    session = requests.Session()
    time.sleep(1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t = time.monotonic()
        r = session.post(stack.url + PREDICT, json=ONE_TEXT, headers=bearer(good), timeout=60)
        latencies.append(time.monotonic() - t)
        statuses.append(r.status_code)
        ids.add(r.headers.get("X-Request-ID"))
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))
    by_status = json.loads(attack.communicate(timeout=120)[0])
    # The gateway's own view of the good requests (its access log's request_time): no client-side delay.
    log = [json.loads(line) for line in stack.project.logs(stack.gateway).splitlines() if line.startswith('{"time":')]
    served = sorted(float(entry["request_time"]) for entry in log if entry["request_id"] in ids)
    client_p99, gateway_p99 = percentile(latencies, 0.99), percentile(served, 0.99)
    report.promise(f"16 parallel callers of one key (rate 50r/s burst 100, 2 in flight), each request 64 Hangul texts "
                   f"of 10,000 characters (truncate), {seconds} s: {sum(by_status.values())} sent, {by_status}; meanwhile "
                   f"another key: {len(latencies)} requests, statuses {sorted(set(statuses))}; as the client saw them p50 "
                   f"{1000 * statistics.median(latencies):.0f} ms, p99 {1000 * client_p99:.0f} ms; at the gateway p50 "
                   f"{1000 * statistics.median(served):.0f} ms, p99 {1000 * gateway_p99:.0f} ms; load average "
                   f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    assert all(s == 200 for s in statuses), statuses
    assert set(by_status) <= {"200", "429 in flight", "429 rate"}, by_status
    assert by_status.get("429 in flight"), "the per-key in-flight limit never answered"
    assert set(worker_cpu(stack)) == pids, "a worker restarted"
    assert not any("Worker died" in stack.project.logs(replica) for replica in stack.replicas)
    assert len(served) == len(latencies)
    # The latency is a figure, printed above and judged in docs/RELIABILITY.md: on 2 cores shared with
    # other work it moves with the machine's load. This bound only catches the failure this replaced
    # (waits of 10-31 s, then 500s when TorchServe's 30 s timeout killed the worker).
    assert gateway_p99 < 10.0, f"p99 {gateway_p99:.2f} s at the gateway"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def test_logs_rotate_on_every_container(stack: Stack, report: Report) -> None:
    """Every service logs with Docker's json-file driver, with a size and a count; the gateway's log,
    filled well past that, keeps at most size x count."""
    project = stack.project
    max_size, max_file = size_bytes(LOG_SETTINGS["LOG_MAX_SIZE"]), int(LOG_SETTINGS["LOG_MAX_FILE"])
    for container in (stack.gateway, stack.torchserve):
        config = project.inspect(container)["HostConfig"]["LogConfig"]
        assert config == {"Type": "json-file", "Config": {"max-size": LOG_SETTINGS["LOG_MAX_SIZE"], "max-file": LOG_SETTINGS["LOG_MAX_FILE"]}}, config
        report.promise(f"{project.name(container)}: LogConfig {json.dumps(config)}")
    # Many small answers over keep-alive connections, 100 pipelined at a time: one access log line each
    # (~260 bytes; more on disk, where Docker wraps each line in JSON), to 1.5 times size x count.
    request = b"GET /nowhere HTTP/1.1\r\nHost: gateway\r\n\r\n"
    lines = 0
    while lines * 260 < 1.5 * max_size * max_file:
        with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
            for _ in range(10):
                sock.sendall(request * 100)
                got = b""
                while got.count(b"HTTP/1.1 404") < 100:
                    got += sock.recv(1 << 20)
                lines += 100
    kept = project.logs(stack.gateway)
    kept_lines = kept.count('"path":"-"')
    report.promise(f"gateway: {lines:,} requests logged (~{lines * 300 / 1e6:.1f} MB of log); docker logs keeps "
                   f"{len(kept) / 1e6:.2f} MB ({kept_lines:,} of those lines): at most {max_file} files of "
                   f"{LOG_SETTINGS['LOG_MAX_SIZE']}")
    assert kept_lines < lines, "nothing rotated away"
    assert len(kept) <= max_size * max_file * 1.1, len(kept)
