"""The compose project under test: fixed names apart from a developer's own stack and images, the CPU
variant's files, Compose v2 or Debian bookworm's docker-compose 1.29, and the docker CLI to look inside.

Every command is bounded in time and fails the test with its output's end when it fails."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import pytest

from tests import ROOT
from tests.e2e.report import Report

# A killed earlier run's leftovers carry these names: a run removes them first and never touches
# anything else (a developer's stack is `gru-encoder`, its images gru-encoder:cpu / :cuda).
# COMPOSE_TEST_NAME=<word> gives a run its own project and image tags, so that two checkouts can run
# the test on one Docker daemon at once.
_NAME = os.environ.get("COMPOSE_TEST_NAME", "compose-test")
if not _NAME.replace("-", "").isalnum():
    raise SystemExit(f"COMPOSE_TEST_NAME={_NAME!r}: use letters, digits and dashes only")
PROJECT = f"gru-encoder-{_NAME}"
FILES = ("docker-compose.yml", "docker-compose.cpu.yml")  # the CPU variant: no GPU reservation
IMAGES = {
    "IMAGE": f"gru-encoder:{_NAME}",
    "GATEWAY_IMAGE": f"gru-encoder-gateway:{_NAME}",
    "LOCUST_IMAGE": f"gru-encoder-locust:{_NAME}",
    "MONITORING_IMAGE": f"gru-encoder-monitoring:{_NAME}",
}
IMAGE_TITLES = ("gru-encoder", "gru-encoder-gateway", "gru-encoder-locust", "gru-encoder-monitoring")  # their org.opencontainers.image.title
STORE = f"model_store/.{_NAME}"  # inside the build context (MAR) and mounted (MODEL_STORE)
INTERNAL_NET, EDGE_NET = f"{PROJECT}_internal", f"{PROJECT}_edge"  # compose v1 and v2 name networks alike


def run(cmd: list[str], timeout: float, check: bool = True, env: dict[str, str] | None = None,
        merge: bool = False) -> subprocess.CompletedProcess[str]:
    """The command's result (stdout, stderr; with merge, both in stdout in the order written); with
    check, a non-zero exit fails the test, showing why."""
    try:
        result = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT if merge else subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"`{' '.join(cmd)}` still running after {timeout:.0f} s:\n{out[-3000:]}", pytrace=False)
    except FileNotFoundError:
        pytest.fail(f"{cmd[0]} not found: scripts/docker-bootstrap.sh installs Docker (as root)", pytrace=False)
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout + (result.stderr or "")).splitlines()[-40:])
        pytest.fail(f"`{' '.join(cmd)}` -> exit status {result.returncode}:\n{tail}", pytrace=False)
    return result


def compose_command() -> list[str]:
    """Compose v2 (the docker CLI plugin) where there is one, else docker-compose 1.29: the compose
    files use only what both understand."""
    if run(["docker", "compose", "version"], timeout=30, check=False).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


class Project:
    """docker compose -p gru-encoder-compose-test with the CPU variant's files and the test's settings."""

    def __init__(self, report: Report):
        self.report = report
        self.command = compose_command()
        # BUILD_NETWORK=host: the build's RUN steps reach the package registries through the host's
        # network, also where dockerd runs without iptables (its bridges then have no NAT).
        self.settings: dict[str, str] = {**IMAGES, "BUILD_NETWORK": "host"}

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings}

    def version(self) -> str:
        short = run([*self.command, "version", "--short"], timeout=30, check=False).stdout.strip()
        return f"{' '.join(self.command)} {short}"

    def compose_command(self, *args: str, profiles: bool = True) -> list[str]:
        # Every profile by default: `down` then takes Locust's and the monitoring's containers too.
        shown = ["--profile", "loadtest", "--profile", "monitoring"] if profiles else []
        return [*self.command, "-p", PROJECT, *(a for f in FILES for a in ("-f", f)), *shown, *args]

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(self.compose_command(*args), timeout, check, env=self.env)

    def build_flags(self) -> list[str]:
        """--force-rm where the compose command has it (docker-compose 1.29's legacy builder): a failed
        step leaves no stopped container behind, as with `make up-cpu`."""
        help_text = run([*self.command, "build", "--help"], timeout=30, check=False).stdout
        return ["--force-rm"] if "--force-rm" in help_text else []

    def docker(self, *args: str, timeout: float = 60, check: bool = True, merge: bool = False
               ) -> subprocess.CompletedProcess[str]:
        return run(["docker", *args], timeout, check, env=self.env, merge=merge)

    def container(self, service: str) -> str:
        cid = self.compose("ps", "-q", service, timeout=60).stdout.strip()
        assert cid, f"no {service} container in the compose project {PROJECT}"
        return cid

    def inspect(self, name: str, kind: str = "container") -> dict[str, Any]:
        return json.loads(self.docker(kind, "inspect", name).stdout)[0]

    def name(self, container: str) -> str:
        return self.inspect(container)["Name"]

    def logs(self, container: str) -> str:
        """stdout and stderr of the container, in order (nginx's access log is on one, the gateway's own
        lines on the other)."""
        return self.docker("logs", container, timeout=60, merge=True).stdout

    def exec(self, service: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`compose exec -T`, its exit status for the caller to judge."""
        return self.compose("exec", "-T", service, *cmd, timeout=timeout, check=False)

    def wait_healthy(self, container: str, seconds: float) -> None:
        """Until the container's health check (a real prediction, for both services) passes."""
        deadline = time.monotonic() + seconds
        while True:
            state = self.inspect(container)["State"]
            health = (state.get("Health") or {}).get("Status", "no health check")
            if health == "healthy":
                return
            if time.monotonic() > deadline:
                log = "\n".join(self.logs(container).splitlines()[-30:])
                pytest.fail(f"{self.name(container)} not healthy after {seconds:.0f} s ({state['Status']}, {health}); "
                            f"its log ends:\n{log}", pytrace=False)
            self.report.note(f"  {self.report.elapsed():.0f}s: {self.name(container)}: {state['Status']}, {health}")
            time.sleep(5)

    def daemon_answers(self) -> bool:
        return run(["docker", "info"], timeout=20, check=False, env=self.env).returncode == 0

    def last_logs(self) -> str:
        result = self.compose("logs", "--no-color", "--tail=60", timeout=60, check=False)
        return "\n".join((result.stdout + result.stderr).splitlines()[-120:])

    def down(self, timeout_s: int = 30) -> str:
        result = self.compose("down", "--volumes", "--remove-orphans", "--timeout", str(timeout_s),
                              timeout=180, check=False)
        return "\n".join((result.stdout + result.stderr).splitlines()[-5:])

    def prune_images(self, remove_tagged: bool) -> None:
        """Each run's new archive leaves the previous run's image untagged: remove those (ours only, by
        label); with remove_tagged also the test's tagged images (the build cache of the next run)."""
        if remove_tagged:
            self.docker("image", "rm", *IMAGES.values(), check=False)
        for title in IMAGE_TITLES:
            self.docker("image", "prune", "-f", "--filter", f"label=org.opencontainers.image.title={title}",
                        timeout=120, check=False)
