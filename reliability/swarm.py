"""Several TorchServe replicas behind the gateway, on Docker Swarm, under real requests.

    make swarm-test                                   # the images of `make up-cpu`, then this
    python -m reliability.swarm --stack wt-swarm --image gru-encoder:cpu --gateway-image ... --locust-image ...

Deploys docker/swarm/stack.yml (initialising a single-node swarm on 127.0.0.1 when the daemon is not in
one, and leaving it at the end), then shows, each with real requests sent from a container on the stack's
attachable `edge` network (nothing is published):
- isolation: `torchserve` does not resolve on the edge network, and TorchServe's containers have no
  default route (checked by name resolution and routes: no packet is sent to an unreachable address);
- spread: each replica's own access log counts the requests it answered;
- a rolling update of every replica under Locust load, counting failed requests;
- a replica killed (SIGKILL) while sequential requests go on: what failed, and when swarm replaced it;
- scaling 1 -> 3 -> 1 seen by the gateway without restarting it (same container throughout);
- the gateway's CPU time per request, TorchServe re-resolved every 2 s (a new connection per request)
  against resolved once (kept-alive connections), alternating, from the containers' cgroup counters.
Writes everything to --out (JSON) and removes the stack, its secret and its networks whatever happened.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.workload import ROOT

STACK_FILE = ROOT / "docker" / "swarm" / "stack.yml"
BODY = '{"texts":["i am cold ."],"return":["hidden"]}'


@dataclass
class SwarmConfig:
    """Run the multi-replica checks on Docker Swarm (every field is a flag)."""

    stack: str = field(default="gru-encoder-swarm", metadata={"help": "stack name (prefixes its services and networks)"})
    image: str = field(default="gru-encoder:cpu", metadata={"help": "the TorchServe image"})
    gateway_image: str = field(default="gru-encoder-gateway:latest", metadata={"help": "the gateway image"})
    locust_image: str = field(default="gru-encoder-locust:latest", metadata={"help": "the Locust image"})
    replicas: int = field(default=3, metadata={"help": "TorchServe replicas"})
    workers: int = field(default=1, metadata={"help": "workers per replica (GRU_ENCODER_WORKERS)"})
    spread_requests: int = field(default=150, metadata={"help": "requests of the spread check"})
    locust_users: int = field(default=4, metadata={"help": "Locust users during the rolling update"})
    kill_probe_s: int = field(default=45, metadata={"help": "seconds of requests around the kill"})
    cpu_requests: int = field(default=400, metadata={"help": "requests per gateway CPU measurement"})
    cpu_repeats: int = field(default=3, metadata={"help": "measurements per resolver mode, alternating (0: none)"})
    ready_timeout_s: int = field(default=300, metadata={"help": "longest wait for replicas to be healthy"})
    out: str = field(default="", metadata={"help": "write the results here (JSON); default: print only"})


def sh(*cmd: str, timeout: float = 120, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed ({result.returncode}): {result.stderr.strip()[-800:]}")
    return result


def log(message: str) -> None:
    print(f"[swarm {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Swarm:
    def __init__(self, cfg: SwarmConfig):
        self.cfg = cfg
        self.key = secrets.token_urlsafe(32)
        self.secret = f"{cfg.stack}-api-key-v1"
        self.initialised = False
        self.resolver_valid_s = 0.0
        self.service = f"{cfg.stack}_torchserve"
        self.gateway_service = f"{cfg.stack}_gateway"
        self.edge = f"{cfg.stack}_edge"

    # ------------------------------------------------------------ set-up and teardown
    def up(self) -> None:
        state = sh("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
        if state != "active":
            # Loopback only: the swarm's management port is never offered on the machine's network.
            log("docker swarm init (single node, 127.0.0.1)")
            sh("docker", "swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")
            self.initialised = True
        sh("docker", "secret", "create", self.secret, "-", input=self.key + "\n")
        self.deploy(resolver_valid="2s")

    def deploy(self, resolver_valid: str, replicas: int | None = None) -> None:
        self.resolver_valid_s = nginx_seconds(resolver_valid)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "IMAGE": self.cfg.image, "GATEWAY_IMAGE": self.cfg.gateway_image,
               "API_KEY_SECRET": self.secret, "TORCHSERVE_REPLICAS": str(replicas or self.cfg.replicas),
               "GRU_ENCODER_WORKERS": str(self.cfg.workers), "GATEWAY_RESOLVER_VALID": resolver_valid,
               # One key sends all the load here: the per-key rate and in-flight limits (50 r/s, 2 at once by
               # default) are not under test.
               "GATEWAY_RATE": "100000r/s", "GATEWAY_BURST": "100000", "GATEWAY_KEY_INFLIGHT": "10000"}
        log(f"docker stack deploy {self.cfg.stack} (replicas {env['TORCHSERVE_REPLICAS']}, resolver {resolver_valid})")
        sh("docker", "stack", "deploy", "--resolve-image", "never", "-c", str(STACK_FILE), self.cfg.stack, env=env)

    def down(self) -> None:
        log(f"removing stack {self.cfg.stack}, its secret and networks")
        sh("docker", "rm", "-f", f"{self.cfg.stack}-locust", check=False)
        sh("docker", "stack", "rm", self.cfg.stack, check=False)
        for _ in range(60):  # networks go once their containers are gone
            left = sh("docker", "network", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={self.cfg.stack}").stdout.split()
            containers = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={self.cfg.stack}").stdout.split()
            if not left and not containers:
                break
            time.sleep(2)
        sh("docker", "secret", "rm", self.secret, check=False)
        if self.initialised:
            others = sh("docker", "service", "ls", "-q", check=False).stdout.split()
            if others:
                log(f"not leaving the swarm: {len(others)} other service(s) run in it")
            else:
                log("docker swarm leave --force (this run initialised it)")
                sh("docker", "swarm", "leave", "--force", check=False)

    # ------------------------------------------------------------ what runs
    def containers(self, service: str | None = None) -> list[str]:
        return sh("docker", "ps", "-q", "--no-trunc", "--filter",
                  f"label=com.docker.swarm.service.name={service or self.service}").stdout.split()

    def health(self, container: str) -> str:
        return sh("docker", "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
                  container, check=False).stdout.strip()

    def wait_converged(self, replicas: int, gone: str = "") -> float:
        """Seconds until exactly `replicas` TorchServe containers run (`gone` not among them), all healthy,
        and the gateway is healthy."""
        start = time.monotonic()
        while time.monotonic() - start < self.cfg.ready_timeout_s:
            ts = self.containers()
            if gone in ts:
                time.sleep(1)
                continue
            gw = self.containers(self.gateway_service)
            if len(ts) == replicas and all(self.health(c) == "healthy" for c in ts) \
                    and len(gw) == 1 and self.health(gw[0]) == "healthy":
                return time.monotonic() - start
            time.sleep(2)
        raise RuntimeError(f"{self.service} did not converge to {replicas} healthy replicas in {self.cfg.ready_timeout_s} s")

    def served_counts(self) -> dict[str, int]:
        """Predictions each replica's TorchServe logged, by task name (its own health checks left out)."""
        counts = {}
        for c in self.containers():
            name = sh("docker", "inspect", "-f", '{{index .Config.Labels "com.docker.swarm.task.name"}}', c).stdout.strip()
            text = sh("docker", "exec", c, "cat", "/home/model-server/logs/access_log.log", check=False).stdout
            counts[name] = sum(1 for line in text.splitlines()
                               if "POST /predictions/gru_encoder" in line and "/127.0.0.1:" not in line)
        return counts

    def probe(self, requests: int = 0, seconds: int = 0, parallel: int = 1, background: bool = False):
        """curl from a container on the edge network: `requests` requests (or for `seconds`), each line
        'status time_total unix_time'. Runs the gateway image (it has curl), not as a service."""
        one = (f"curl -s -o /dev/null -m 30 -w '%{{http_code}} %{{time_total}} '\"$(date +%s.%N)\"'\\n' "
               f"-H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' -d '{BODY}' "
               "http://gateway:8080/predictions/gru_encoder")
        if seconds:
            script = f"end=$((SECONDS+{seconds})); while [ $SECONDS -lt $end ]; do {one}; done"
        else:  # `parallel` loops of sequential requests
            script = f"for p in $(seq {parallel}); do (for i in $(seq {requests // parallel}); do {one}; done) & done; wait"
        cmd = ["docker", "run", "--rm", "--network", self.edge, "-e", f"KEY={self.key}", "--entrypoint", "bash",
               self.cfg.gateway_image, "-c", script]
        if background:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return parse_probe(sh(*cmd, timeout=600).stdout)

    # ------------------------------------------------------------ the checks
    def isolation(self) -> dict[str, Any]:
        edge = sh("docker", "run", "--rm", "--network", self.edge, "--entrypoint", "bash", self.cfg.gateway_image, "-c",
                  "for n in torchserve gateway; do getent hosts $n >/dev/null && echo $n resolves || echo $n does-not-resolve; done").stdout
        routes = {}
        for c in self.containers()[:1] + self.containers(self.gateway_service):
            table = sh("docker", "exec", c, "cat", "/proc/net/route").stdout.splitlines()[1:]
            service = "torchserve" if c in self.containers() else "gateway"
            routes[service] = any(line.split()[1] == "00000000" for line in table)
        return {"from_edge": edge.split("\n")[:2], "default_route": routes}

    def rolling_update(self) -> dict[str, Any]:
        name = f"{self.cfg.stack}-locust"
        sh("docker", "run", "-d", "--name", name, "--network", self.edge,
           "-v", f"{ROOT / 'loadtests'}:/mnt/project/loadtests:ro", "-v", f"{ROOT / 'gru_encoder'}:/mnt/project/gru_encoder:ro",
           self.cfg.locust_image, "--headless", "-u", str(self.cfg.locust_users), "-r", str(self.cfg.locust_users),
           "-t", "600s", "-H", "http://gateway:8080", "--api-key", self.key, "--only-summary", "--json",
           "--max-fail-ratio", "1", "--max-p95-ms", "100000", "-s", "20")
        time.sleep(15)  # load running before the update starts
        before = [self.task_id(c) for c in self.containers()]
        log("docker service update --force (start-first, one replica at a time) under Locust load")
        start = time.monotonic()
        sh("docker", "service", "update", "--force", "--detach=false", self.service, timeout=900)
        took = time.monotonic() - start
        time.sleep(10)  # load on the new replicas only
        sh("docker", "kill", "--signal", "SIGTERM", name)  # locust stops its users and prints its stats
        sh("docker", "wait", name, timeout=60, check=False)
        stats = locust_totals(sh("docker", "logs", name, check=False).stdout)
        sh("docker", "rm", "-f", name, check=False)
        after = [self.task_id(c) for c in self.containers()]
        return {"update_s": round(took, 1), "replaced_all": not set(before) & set(after), **stats}

    def task_id(self, container: str) -> str:
        return sh("docker", "inspect", "-f", '{{index .Config.Labels "com.docker.swarm.task.id"}}', container).stdout.strip()

    def kill_one(self) -> dict[str, Any]:
        probe = self.probe(seconds=self.cfg.kill_probe_s, background=True)
        time.sleep(8)
        victim = self.containers()[0]
        log(f"docker kill {victim[:12]} (SIGKILL) while requests go on")
        killed_at = time.time()
        sh("docker", "kill", victim)
        self.wait_converged(self.cfg.replicas, gone=victim)
        replaced_s = time.time() - killed_at
        out, _ = probe.communicate(timeout=self.cfg.kill_probe_s + 120)
        result = parse_probe(out)
        samples = result.pop("samples")
        failed_at = [round(t - killed_at, 2) for status, _, t in samples if status != 200]
        during = [ms for _, ms, t in samples if killed_at <= t <= killed_at + replaced_s]
        return {**result, "replaced_healthy_after_s": round(replaced_s, 1), "failed_seconds_after_kill": failed_at,
                "answered_while_replacing": len(during),
                "max_ms_while_replacing": round(max(during), 1) if during else None}

    def scale(self, replicas: int) -> float:
        """Seconds until the replicas are healthy. Returns after the gateway's cached answer for TorchServe's
        name has expired too (GATEWAY_RESOLVER_VALID, plus a second): the promise is that the gateway
        follows scaling within that time, not at the instant the replicas turn healthy."""
        log(f"docker service scale {self.service}={replicas}")
        sh("docker", "service", "scale", "--detach=true", f"{self.service}={replicas}")
        converged = round(self.wait_converged(replicas), 1)
        time.sleep(self.resolver_valid_s + 1)
        return converged

    def gateway_cpu(self) -> dict[str, Any]:
        """Gateway CPU time (cgroup cpuacct) per request with each resolver mode, alternating."""
        runs: dict[str, list[float]] = {"2s": [], "0": []}
        for _ in range(self.cfg.cpu_repeats):
            for mode in ("2s", "0"):
                self.deploy(resolver_valid=mode, replicas=1)
                time.sleep(5)
                self.wait_converged(1)
                self.probe(requests=40, parallel=4)  # warm-up
                gw, ts = self.containers(self.gateway_service)[0], self.containers()[0]
                before = cpu_ns(gw), cpu_ns(ts)
                result = self.probe(requests=self.cfg.cpu_requests, parallel=4)
                after = cpu_ns(gw), cpu_ns(ts)
                ok = result["status"].get(200, 0)
                runs[mode].append({"gateway_us_per_request": round((after[0] - before[0]) / 1000 / ok, 1),
                                   "torchserve_us_per_request": round((after[1] - before[1]) / 1000 / ok, 1),
                                   "ok": ok, "mean_ms": result["mean_ms"]})
                log(f"resolver {mode}: {runs[mode][-1]}")
        return {"re-resolved every 2s": runs["2s"], "resolved once (keepalive)": runs["0"]}


def cpu_ns(container: str) -> int:
    """The container's CPU time so far (cgroup v1 cpuacct, else v2 cpu.stat), in ns."""
    for path in (f"/sys/fs/cgroup/cpuacct/docker/{container}/cpuacct.usage",
                 f"/sys/fs/cgroup/cpu,cpuacct/docker/{container}/cpuacct.usage"):
        if Path(path).exists():
            return int(Path(path).read_text())
    stat = Path(f"/sys/fs/cgroup/system.slice/docker-{container}.scope/cpu.stat").read_text()
    return int(re.search(r"usage_usec (\d+)", stat)[1]) * 1000


def parse_probe(out: str) -> dict[str, Any]:
    samples = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            samples.append((int(parts[0]), float(parts[1]) * 1000, float(parts[2])))
    times = [ms for _, ms, _ in samples]
    return {"requests": len(samples), "status": dict(Counter(s for s, _, _ in samples)),
            "mean_ms": round(statistics.fmean(times), 1) if times else None,
            "max_ms": round(max(times), 1) if times else None, "samples": samples}


def locust_totals(logs: str) -> dict[str, Any]:
    """Requests and failures from Locust's --json output (a list of per-name stats)."""
    start = logs.find("[")
    try:
        stats = json.loads(logs[start:logs.rfind("]") + 1])
    except ValueError:
        return {"locust_output": logs[-2000:]}
    requests = sum(s["num_requests"] for s in stats)
    failures = sum(s["num_failures"] for s in stats)
    reasons = re.findall(r"^\s*(\d+)\s+(POST \S+: .+)$", logs, re.M)  # locust's error report, if any
    return {"locust_requests": requests, "locust_failures": failures, "locust_errors": reasons[:10]}


def nginx_seconds(value: str) -> float:
    """An nginx time as GATEWAY_RESOLVER_VALID takes it ("0", "2s", "500ms", "1m") in seconds."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", value.strip()).groups()
    return float(number) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[unit]


def without_samples(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "samples"}


def run(cfg: SwarmConfig) -> dict[str, Any]:
    swarm = Swarm(cfg)
    results: dict[str, Any] = {"config": dataclasses.asdict(cfg), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    t0 = time.monotonic()
    try:
        swarm.up()
        results["first_ready_s"] = round(swarm.wait_converged(cfg.replicas), 1)
        results["isolation"] = swarm.isolation()
        log(f"isolation: {results['isolation']}")
        before = swarm.served_counts()
        probe = swarm.probe(requests=cfg.spread_requests, parallel=2)
        after = swarm.served_counts()
        results["spread"] = {**without_samples(probe), "per_replica": {k: after[k] - before.get(k, 0) for k in after}}
        log(f"spread: {results['spread']}")
        results["rolling_update"] = swarm.rolling_update()
        log(f"rolling update: {results['rolling_update']}")
        results["kill"] = swarm.kill_one()
        log(f"kill: {results['kill']}")
        gateway = swarm.containers(swarm.gateway_service)
        scaling: dict[str, Any] = {"to_1_s": swarm.scale(1)}
        before = swarm.served_counts()
        probe = swarm.probe(requests=60)
        after = swarm.served_counts()
        scaling["one"] = {**without_samples(probe), "per_replica": {k: after[k] - before.get(k, 0) for k in after}}
        scaling["to_3_s"] = swarm.scale(3)
        before = swarm.served_counts()
        probe = swarm.probe(requests=cfg.spread_requests, parallel=2)
        after = swarm.served_counts()
        scaling["three"] = {**without_samples(probe), "per_replica": {k: after[k] - before.get(k, 0) for k in after}}
        scaling["back_to_1_s"] = swarm.scale(1)
        scaling["one_again"] = without_samples(swarm.probe(requests=60))
        scaling["gateway_not_restarted"] = swarm.containers(swarm.gateway_service) == gateway
        results["scaling"] = scaling
        log(f"scaling: {scaling}")
        if cfg.cpu_repeats:
            results["gateway_cpu"] = swarm.gateway_cpu()
    finally:
        results["seconds"] = round(time.monotonic() - t0)
        try:
            swarm.down()
        finally:
            if cfg.out:
                Path(cfg.out).write_text(json.dumps(results, indent=1) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=SwarmConfig.__doc__)
    for f in dataclasses.fields(SwarmConfig):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default, help=f.metadata.get("help"))
    cfg = SwarmConfig(**vars(parser.parse_args(argv)))
    results = run(cfg)
    print(json.dumps({k: v for k, v in results.items() if k != "config"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
