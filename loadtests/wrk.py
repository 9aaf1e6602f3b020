"""wrk (Debian's package, `make bench-tools` installs it) as a low-overhead cross-check of locust.

Locust is Python: at a few thousand requests/s it takes a large share of this machine's 2 cores, which
the server under test then lacks. wrk is C on epoll and costs a small fraction of that, so its one-text
figures beside locust's show what the load generator itself costs. It does not check bodies (locust
does), only statuses: non-2xx answers are counted as errors.

The request: one held-out text per request with "return": ["hidden"], a different text each time
(a Lua script cycles through bodies written to a file), keep-alive connections, closed loop.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from pathlib import Path

import orjson

# Reads the bodies (one JSON per line), posts them in turn and prints the summary as one JSON line.
# No response() callback: defining one makes wrk hand every response to Lua, which costs CPU.
LUA = """
local path, file = "{path}", "{bodies}"
local bodies = {{}}
for line in io.lines(file) do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept-Encoding"] = "identity"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, path, nil, bodies[i])
end
done = function(s, latency, requests)
  io.write(string.format('WRK_JSON {{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "mean_us": %.1f}}\\n', s.requests, s.duration, s.bytes, s.errors.connect, s.errors.read,
    s.errors.write, s.errors.status, s.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean))
end
"""

INSTALL_HINT = "wrk is not installed: run `make bench-tools` (as root: apt-get install -y wrk)"


def available() -> bool:
    return shutil.which("wrk") is not None


def one_text_bodies(texts: list[str], n: int = 500, seed: int = 7) -> list[bytes]:
    """n one-text requests asking for the hidden state only, texts drawn from `texts`."""
    rng = random.Random(seed)
    return [orjson.dumps({"texts": [rng.choice(texts)], "return": ["hidden"]}) for _ in range(n)]


def script(workdir: Path, path: str, bodies: list[bytes]) -> Path:
    """Write the bodies and the Lua script into workdir; returns the script's path."""
    body_file = workdir / "wrk-bodies.jsonl"
    body_file.write_bytes(b"\n".join(bodies) + b"\n")
    lua = workdir / "wrk-post.lua"
    lua.write_text(LUA.format(path=path, bodies=body_file))
    return lua


def start(url: str, path: str, connections: int, seconds: float, lua: Path) -> subprocess.Popen:
    """Start wrk (one thread: at these rates one epoll loop keeps up, and it leaves the cores to the server)."""
    if not available():
        raise RuntimeError(INSTALL_HINT)
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(lua), url + path]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, timeout: float) -> dict:
    """Wait for wrk; its summary (the JSON line the script's done() prints)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    out = proc.stdout.read().decode(errors="replace")
    proc.stdout.close()
    lines = [line for line in out.splitlines() if line.startswith("WRK_JSON ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out[-2000:]}")
    return json.loads(lines[-1].removeprefix("WRK_JSON "))


def figures(summary: dict) -> dict:
    """The summary as the bench reports it: req/s, latency in ms, error count."""
    seconds = summary["duration_us"] / 1e6
    errors = sum(summary[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return {
        "requests": summary["requests"],
        "failures": errors,
        "req_per_s": summary["requests"] / seconds,
        "texts_per_s": (summary["requests"] - summary["status_errors"]) / seconds,
        "p50_ms": summary["p50_us"] / 1e3,
        "p90_ms": summary["p90_us"] / 1e3,
        "p99_ms": summary["p99_us"] / 1e3,
        "seconds": seconds,
    }


if __name__ == "__main__":  # a quick manual check: python -m loadtests.wrk URL PATH CONNECTIONS SECONDS
    import sys
    import tempfile

    from loadtests.workload import held_out_texts

    url, path, conns, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with tempfile.TemporaryDirectory() as tmp:
        lua = script(Path(tmp), path, one_text_bodies(held_out_texts()))
        print(json.dumps(figures(finish(start(url, path, conns, secs, lua), secs + 60)), indent=1), file=sys.stdout)
