"""docker/swarm/stack.yml: valid Compose, and changed from docker-compose.yml where a swarm stack needs it
(tests/e2e/test_7_swarm.py deploys it for real)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests import ROOT

STACK = ROOT / "docker" / "swarm" / "stack.yml"


def test_the_stack_file_follows_the_compose_spec() -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema",
                             "vendor.compose-spec", str(STACK)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stack_uses_what_a_swarm_here_supports() -> None:
    stack = yaml.safe_load(STACK.read_text())
    services = stack["services"]
    assert set(services) == {"torchserve", "gateway"}
    for name, service in services.items():
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name  # no VIP: IPVS may be missing
        assert "ports" not in service, name  # host-mode publishing binds 0.0.0.0: callers join `edge`
        assert not {"depends_on", "profiles", "tmpfs", "security_opt", "build"} & set(service), name
    torchserve, gateway = services["torchserve"], services["gateway"]
    assert torchserve["networks"] == ["internal"] and gateway["networks"] == ["internal", "edge"]
    assert stack["networks"]["internal"]["internal"] is True and stack["networks"]["edge"]["attachable"] is True
    update = torchserve["deploy"]["update_config"]
    assert update["order"] == "start-first" and update["parallelism"] == 1 and update["failure_action"] == "rollback"
    assert torchserve["healthcheck"]["test"] == ["CMD", "python3", "/usr/local/bin/gru-encoder-healthcheck"]
    # The gateway follows replicas that come and go; its keys are an external, versioned secret.
    assert gateway["environment"]["GATEWAY_RESOLVER_VALID"] == "${GATEWAY_RESOLVER_VALID:-2s}"
    assert stack["secrets"]["api_key"] == {"external": True, "name": "${API_KEY_SECRET:-gru-encoder-api-key-v1}"}
    assert gateway["read_only"] is True and gateway["volumes"] == [{"type": "tmpfs", "target": "/tmp"}]
    assert gateway["cap_drop"] == ["ALL"]
