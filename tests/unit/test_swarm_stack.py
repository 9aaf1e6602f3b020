"""docker/swarm/stack.yml: valid Compose, and changed from docker-compose.yml where a swarm stack needs it
(tests/e2e/test_7_swarm.py deploys it for real)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from gru_encoder.host import deploy_env
from gru_encoder.host.settings import ServingSettings
from tests import ROOT

STACK = ROOT / "docker" / "swarm" / "stack.yml"
# The stack's own defaults of serving settings: one worker a replica, since each replica gets
# TORCHSERVE_CPUS (1) CPU; every other setting is the settings' default unless the host sets it.
STACK_DEFAULTS = {"GRU_ENCODER_WORKERS": "1"}


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


def test_the_stack_passes_the_same_serving_settings_through_as_compose() -> None:
    """Exactly the settings gru_encoder/host/deploy_env.py says a deployment carries: none missing, none
    unknown, none of the image's own (address, paths) or ports."""
    env = yaml.safe_load(STACK.read_text())["services"]["torchserve"]["environment"]
    env = {k: v for k, v in env.items() if k.startswith("GRU_ENCODER_")}
    expected = {**deploy_env.compose_environment(), **{k: "${%s:-%s}" % (k, v) for k, v in STACK_DEFAULTS.items()}}
    missing, unknown = sorted(set(expected) - set(env)), sorted(set(env) - set(expected))
    assert not missing, f"{STACK.name} does not pass {missing} through: `python -m gru_encoder.host.deploy_env --compose` prints the lines"
    assert not unknown, f"{STACK.name} passes {unknown}, which are not deployed serving settings (gru_encoder/host/deploy_env.py)"
    assert env == expected
    assert ServingSettings.from_env(STACK_DEFAULTS).workers == 1  # the stack's defaults are valid settings
