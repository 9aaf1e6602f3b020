"""gru_encoder/host/deploy_env.py: serving.env rendered from ServingSettings, and every deployment file
held to the same list of deploy-time settings (compose and the stack in test_deploy_files.py and
test_swarm_stack.py, the rendered Kubernetes objects in test_kubernetes.py)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from gru_encoder.host import deploy_env
from gru_encoder.host.settings import ENV_PREFIX, ServingSettings
from tests import ROOT

DEPLOYMENT_FILES = sorted(
    [ROOT / "docker-compose.yml", ROOT / "docker-compose.override.yml", ROOT / "docker-compose.cpu.yml",
     ROOT / "docker" / "swarm" / "stack.yml"]
    + [p for p in (ROOT / "deploy" / "kubernetes").rglob("*") if p.suffix in (".yaml", ".yml", ".env")])


def read_env_file(text: str) -> dict[str, str]:
    """KEY=value lines, as kustomize's configMapGenerator reads an env file (comments and blanks skipped)."""
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))


def test_serving_env_is_the_renderers_output() -> None:
    assert deploy_env.SERVING_ENV.read_text() == deploy_env.render_serving_env(), "serving.env has drifted: make deploy-env"


def test_serving_env_holds_the_defaults_and_says_it_is_generated() -> None:
    text = deploy_env.SERVING_ENV.read_text()
    assert "Generated: do not edit" in text and "make deploy-env" in text
    values = read_env_file(text)
    assert values == deploy_env.deployed_env()
    assert ServingSettings.from_env(values) == ServingSettings()  # read back, the same settings


def test_every_field_is_deployed_or_named_as_the_images_or_the_hosts() -> None:
    names = [f.name for f in dataclasses.fields(ServingSettings)]
    deployed = [f.name for f in deploy_env.deployed_fields()]
    assert len(set(deploy_env.NOT_DEPLOYED)) == len(deploy_env.NOT_DEPLOYED)
    stale = sorted(set(deploy_env.NOT_DEPLOYED) - set(names))
    assert not stale, f"gru_encoder/host/deploy_env.py names {stale}, which ServingSettings does not have: remove them"
    assert sorted(deployed + list(deploy_env.NOT_DEPLOYED)) == sorted(names)
    assert deployed == [n for n in names if n in deployed]  # ServingSettings' order


def test_a_new_field_is_deployed_by_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass(frozen=True)
    class Wider(ServingSettings):
        warmup_requests: int = dataclasses.field(default=3, metadata={"help": "requests sent before ready"})

    monkeypatch.setattr(deploy_env, "ServingSettings", Wider)
    assert "# requests sent before ready\nGRU_ENCODER_WARMUP_REQUESTS=3\n" in deploy_env.render_serving_env()
    assert deploy_env.compose_environment()["GRU_ENCODER_WARMUP_REQUESTS"] == "${GRU_ENCODER_WARMUP_REQUESTS:-}"


def test_the_image_sets_exactly_the_image_fixed_settings_and_each_differs_from_the_local_default() -> None:
    """The container's own values have one source, the Dockerfile's ENV; deploy_env names them."""
    env = dict(re.findall(r"(GRU_ENCODER_[A-Z_]+)=(\S+)", (ROOT / "Dockerfile").read_text()))
    assert set(env) == {deploy_env.env_name(n) for n in deploy_env.IMAGE_FIXED}
    defaults = ServingSettings()
    for name in deploy_env.IMAGE_FIXED:
        assert env[deploy_env.env_name(name)] != str(getattr(defaults, name)), f"{name}: the image would restate the default"


@pytest.mark.parametrize("path", DEPLOYMENT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_deployment_file_names_an_unknown_setting_or_one_the_image_or_host_owns(path: Path) -> None:
    """Every GRU_ENCODER_* a deployment file mentions (comments too) is a deployed setting: a typo, a
    setting renamed or removed, or one that the image (address, paths) or the host (ports) owns fails."""
    named = set(re.findall(r"\b(GRU_ENCODER_[A-Z0-9_]*[A-Z0-9])\b", path.read_text()))
    deployed = set(deploy_env.deployed_env())
    assert named <= deployed, f"{path.relative_to(ROOT)}: {sorted(named - deployed)} are not deployed serving settings"


def test_the_command_prints_checks_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert deploy_env.main([]) == 0
    assert capsys.readouterr().out == deploy_env.render_serving_env()
    target = tmp_path / "serving.env"
    target.write_text(deploy_env.render_serving_env() + "GRU_ENCODER_MAX_BATCH_DELAY_MS=2\n")  # a hand edit
    assert deploy_env.main(["--check", "--path", str(target)]) == 1
    assert "make deploy-env" in capsys.readouterr().err
    assert deploy_env.main(["--write", "--path", str(target)]) == 0
    assert deploy_env.main(["--check", "--path", str(target)]) == 0
    assert target.read_text() == deploy_env.render_serving_env()
    assert deploy_env.main(["--compose"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"{ENV_PREFIX}WORKERS: ${{{ENV_PREFIX}WORKERS:-}}" in lines
    assert len([line for line in lines if line.startswith(ENV_PREFIX)]) == len(deploy_env.deployed_fields())
