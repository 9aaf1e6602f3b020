"""What is published and reachable, and what is not: only the gateway on the host's loopback, TorchServe
on the internal network alone, its management and gRPC APIs refused from everywhere but its own
container, the edge network without a way to TorchServe; non-root processes, a read-only gateway.

Probes go to 127.0.0.1 and to the stack's own containers only; isolation from the edge network is
shown by name resolution and by the route Docker's rules drop, never by a packet to anything else."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.project import EDGE_NET, IMAGES, INTERNAL_NET
from tests.e2e.report import Report
from tests.e2e.stack import MANAGEMENT_PORT, Stack, port_open

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]

CURL_REFUSED = 7  # curl's exit code for "connection refused"
# Run inside a container on the edge network only, the torchserve container's address as $1.
EDGE_PROBE = """
curl -sS -m 10 -o /dev/null -w "gateway:8080/ping -> %{http_code}\\n" http://gateway:8080/ping
if getent hosts torchserve >/dev/null; then echo "the name torchserve resolves"
else echo "the name torchserve does not resolve"; fi
for port in 8080 8081; do
  rc=0; curl -sS -m 5 -o /dev/null "http://$1:$port/" 2>/dev/null || rc=$?
  echo "$1:$port -> curl exit code $rc"
done
"""


def published(stack: Stack, container: str) -> list[str]:
    ports = stack.project.inspect(container)["NetworkSettings"]["Ports"] or {}
    return [f"{port} -> {b['HostIp']}:{b['HostPort']}" for port, bindings in ports.items() for b in bindings or []]


def torchserve_ip(stack: Stack) -> str:
    return stack.project.inspect(stack.torchserve)["NetworkSettings"]["Networks"][INTERNAL_NET]["IPAddress"]


def test_torchserve_publishes_nothing(stack: Stack, report: Report) -> None:
    ports = published(stack, stack.torchserve)
    assert not ports, f"torchserve publishes ports: {ports}"
    report.promise("torchserve publishes: nothing")


def test_gateway_publishes_8080_only_on_loopback(stack: Stack, report: Report) -> None:
    """Published by gateway-port, which holds the socket; the gateway runs in that container's network."""
    ports = published(stack, stack.gateway_port)
    mode = stack.project.inspect(stack.gateway)["HostConfig"]["NetworkMode"]
    report.promise(f"gateway-port publishes: {', '.join(ports)}; the gateway's network: {mode[:22]}")
    assert ports == [f"8080/tcp -> 127.0.0.1:{stack.port}"], "the gateway should publish 8080 only, on 127.0.0.1"
    assert mode == f"container:{stack.project.inspect(stack.gateway_port)['Id']}"


def test_torchserve_is_on_the_internal_network_only(stack: Stack, report: Report) -> None:
    project = stack.project
    ts_nets = sorted(project.inspect(stack.torchserve)["NetworkSettings"]["Networks"])
    gw_nets = sorted(project.inspect(stack.gateway_port)["NetworkSettings"]["Networks"])  # the gateway's too
    internal = project.inspect(INTERNAL_NET, "network")["Internal"]
    report.promise(f"torchserve networks: {' '.join(ts_nets)} (internal: {str(internal).lower()}); "
                   f"gateway networks: {' '.join(gw_nets)}")
    assert ts_nets == [INTERNAL_NET], f"torchserve should be on {INTERNAL_NET} only"
    assert internal is True, f"{INTERNAL_NET} should be internal (no route out)"
    assert gw_nets == sorted([INTERNAL_NET, EDGE_NET])


def test_management_port_is_refused_from_the_host(stack: Stack, report: Report) -> None:
    """It listens on its container's loopback: neither the host's loopback nor the container's address."""
    ip = torchserve_ip(stack)
    if not stack.management_port_busy_before:  # else a developer's own `make serve` holds it
        assert not port_open("127.0.0.1", MANAGEMENT_PORT), f"management port {MANAGEMENT_PORT} reachable on the host"
    assert not port_open(ip, MANAGEMENT_PORT), f"management port reachable from the host at the container's address {ip}"
    report.promise(f"from the host: 127.0.0.1:{MANAGEMENT_PORT} and torchserve's {ip}:{MANAGEMENT_PORT} refuse connections")


def test_from_the_gateway_container_only_inference_answers(stack: Stack, report: Report) -> None:
    project = stack.project
    result = project.exec("gateway", "curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}",
                          "http://torchserve:8080/ping")
    assert result.returncode == 0 and result.stdout == "200", f"the gateway cannot reach torchserve:8080: {result.stderr}"
    report.promise("from the gateway container: torchserve:8080/ping -> 200")
    for port in (8081, 7070, 7071):
        url = f"http://torchserve:{port}/models"
        rc = project.exec("gateway", "curl", "-sS", "-m", "10", "-o", "/dev/null", url).returncode
        assert rc == CURL_REFUSED, f"{url} from the gateway container: curl exit code {rc}, expected {CURL_REFUSED} (refused)"
    report.promise("from the gateway container: torchserve:8081 (management), :7070 and :7071 (gRPC) refuse connections")


def test_edge_network_reaches_the_gateway_never_torchserve(stack: Stack, report: Report) -> None:
    project = stack.project
    ip = torchserve_ip(stack)
    result = project.docker("run", "--rm", "--network", EDGE_NET, "--entrypoint", "bash", IMAGES["GATEWAY_IMAGE"],
                            "-c", EDGE_PROBE, "_", ip, timeout=90)
    lines = result.stdout.strip().splitlines()
    for line in lines:
        report.promise(f"from a container on {EDGE_NET} only: {line}")
    assert "gateway:8080/ping -> 200" in lines, "a container on the edge network should reach the gateway"
    assert "the name torchserve does not resolve" in lines, "torchserve should not resolve on the edge network"
    assert f"{ip}:8081 -> curl exit code 0" not in lines, "management reachable from the edge network"
    if f"{ip}:8080 -> curl exit code 0" not in lines:
        report.promise(f"torchserve ({ip}) is not reachable from the edge network: Docker isolates the internal network")
        return
    # Docker isolates internal networks with iptables rules; a daemon run with --iptables=false has none.
    assert not isolation_rule_present(stack), \
        "torchserve reachable by address from the edge network despite Docker's isolation rules"
    report.promise("NOT CHECKED: torchserve is reachable by address from the edge network because this Docker daemon "
                   "runs without iptables (--iptables=false), and Docker isolates internal networks with iptables rules")


def isolation_rule_present(stack: Stack) -> bool:
    """Has dockerd written its DROP rule for the internal network's bridge (DOCKER-ISOLATION-STAGE-1)?"""
    bridge = "br-" + stack.project.inspect(INTERNAL_NET, "network")["Id"][:12]
    try:
        rules = subprocess.run(["iptables", "-S", "DOCKER-ISOLATION-STAGE-1"], capture_output=True, text=True,
                               timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(f"-o {bridge} -j DROP" in rule for rule in rules.splitlines())


@pytest.mark.parametrize("service, user, uid", [("torchserve", "model-server", 1000), ("gateway", "gateway", 1001),
                                                ("gateway-port", "gateway", 1001)])
def test_every_process_runs_as_a_non_root_user(service: str, user: str, uid: int, stack: Stack, report: Report) -> None:
    project = stack.project
    container = {"torchserve": stack.torchserve, "gateway": stack.gateway, "gateway-port": stack.gateway_port}[service]
    rows = [line.split() for line in project.docker("top", container, "-eo", "pid,uid,comm").stdout.splitlines()[1:]]
    uids = sorted({row[1] for row in rows})
    commands = sorted({row[2] for row in rows})
    configured = project.inspect(container)["Config"]["User"]
    report.promise(f"{project.name(container)}: user {configured}, uid of every process: {' '.join(uids)} ({' '.join(commands)})")
    assert rows and "0" not in uids, f"{service} runs a process as root"
    assert configured == user and uids == [str(uid)], (configured, uids)


def test_gateway_root_filesystem_is_read_only(stack: Stack, report: Report) -> None:
    project = stack.project
    read_only = project.inspect(stack.gateway)["HostConfig"]["ReadonlyRootfs"]
    assert read_only is True, "the gateway's root filesystem should be read-only"
    assert project.inspect(stack.gateway_port)["HostConfig"]["ReadonlyRootfs"] is True
    assert project.exec("gateway", "touch", "/etc/nginx/x").returncode != 0, "the gateway could write to its root filesystem"
    report.promise("gateway: read-only root filesystem (touch /etc/nginx/x fails), a tmpfs on /tmp; gateway-port's read-only too")


def test_management_api_answers_inside_its_container_only_and_registers_only_the_store(stack: Stack, report: Report) -> None:
    project = stack.project
    models = project.exec("torchserve", "python3", "-c", "import urllib.request; "
                          'print(urllib.request.urlopen("http://127.0.0.1:8081/models", timeout=10).read().decode())')
    assert models.returncode == 0 and "gru_encoder" in models.stdout, models.stdout + models.stderr
    report.promise("inside the torchserve container, the management API answers: " + " ".join(models.stdout.split()))
    # Registration is on (each replica's reconciler adds the model's versions), for archives of the store only.
    answer = project.exec("torchserve", "python3", "-c", """
import urllib.request, urllib.error
try:
    urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:8081/models?url=http://127.0.0.1:9/x.mar", method="POST"), timeout=10)
    print(200)
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode()[:300])
""").stdout.strip()
    report.promise(f"  POST /models?url=http://127.0.0.1:9/x.mar (an archive from outside the store) -> {answer}")
    assert answer.split()[0] in ("400", "403", "404") and "allowed URL" in answer, answer
