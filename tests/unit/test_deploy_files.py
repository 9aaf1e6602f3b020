"""The deployment: docker-compose.yml, its GPU and CPU variants, the Dockerfiles and the container config.

Fast tests check the files (against the Compose specification's JSON schema and for the properties
that matter); tests/e2e builds and runs the stack for real.
The gateway's own config and entrypoint are tested in tests/unit/test_gateway.py.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from gru_encoder.host import deploy_env
from gru_encoder.host.settings import ServingSettings
from tests import ROOT
VENV_BIN = Path(sys.executable).parent
BASE, GPU, CPU = "docker-compose.yml", "docker-compose.override.yml", "docker-compose.cpu.yml"


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def merge(base: dict, override: dict) -> dict:
    """Compose's merge for what these files use: mappings merge key by key, the rest is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def variant(*names: str) -> dict:
    config: dict = {}
    for name in names:
        config = merge(config, load(name))
    return config


def gpu_devices(service: dict) -> list:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def properties(name: str) -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


@pytest.mark.parametrize("name", [BASE, GPU, CPU])
def test_compose_files_follow_the_compose_spec(name: str) -> None:
    result = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", name],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_variant_reserves_one_nvidia_gpu_and_cpu_variant_none() -> None:
    # `docker compose up` reads docker-compose.yml + docker-compose.override.yml (GPU); the CPU
    # variant names docker-compose.yml + docker-compose.cpu.yml, so no reservation reaches it.
    gpu = variant(BASE, GPU)["services"]["torchserve"]
    assert gpu_devices(gpu) == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    cpu = variant(BASE, CPU)["services"]["torchserve"]
    assert gpu_devices(cpu) == [] and "deploy" not in cpu
    assert gpu_devices(load(BASE)["services"]["torchserve"]) == []
    # The CPU variant builds with CPU torch and tags its image apart from the CUDA one.
    assert cpu["build"]["args"]["TORCH_INDEX_URL"].endswith("download.pytorch.org/whl/cpu}")
    assert cpu["image"] != gpu["image"]


@pytest.mark.parametrize("names", [(BASE, GPU), (BASE, CPU)], ids=["gpu", "cpu"])
def test_only_the_gateway_is_published_on_loopback_by_default(names: tuple[str, ...]) -> None:
    services = variant(*names)["services"]
    assert "ports" not in services["torchserve"]
    # The gateway's port is published by gateway-port, whose network the gateway runs in.
    assert services["gateway-port"]["ports"] == ["${GATEWAY_BIND:-127.0.0.1}:${GATEWAY_PORT:-8080}:8080"]
    assert "ports" not in services["gateway"] and services["gateway"]["network_mode"] == "service:gateway-port"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("${") and ":-127.0.0.1}" in port, f"{name} publishes {port} beyond loopback"
            assert not re.search(r":(8081|8082|7070|7071)$", port), f"{name} publishes {port}"


@pytest.mark.parametrize("names", [(BASE, GPU), (BASE, CPU)], ids=["gpu", "cpu"])
def test_torchserve_is_on_the_internal_network_only(names: tuple[str, ...]) -> None:
    config = variant(*names)
    services, networks = config["services"], config["networks"]
    assert networks["internal"] == {"internal": True}
    assert not networks["edge"].get("internal", False)
    assert services["torchserve"]["networks"] == ["internal"]
    # The gateway's networks are gateway-port's, where it answers to the name `gateway`.
    assert services["gateway-port"]["networks"] == {"internal": {"aliases": ["gateway"]}, "edge": {"aliases": ["gateway"]}}
    assert "networks" not in services["gateway"]
    # Locust loads TorchServe directly; only the master, for its published web UI, is on the edge.
    assert services["locust-master"]["networks"] == ["internal", "edge"]
    assert services["locust-worker"]["networks"] == ["internal"]
    assert "torchserve:8080" in services["locust-master"]["command"]


def test_gateway_service_is_locked_down_and_checks_the_model() -> None:
    config = variant(BASE, CPU)
    gateway = config["services"]["gateway"]
    assert gateway["build"]["dockerfile"] == "docker/gateway/Dockerfile"
    assert gateway["build"]["args"]["BASE_IMAGE"] == "${BASE_IMAGE:-debian:bookworm-slim}"
    assert gateway["read_only"] is True and gateway["tmpfs"] == ["/tmp"]
    assert gateway["cap_drop"] == ["ALL"] and gateway["security_opt"] == ["no-new-privileges:true"]
    assert gateway["secrets"] == ["api_key"]
    assert config["secrets"]["api_key"] == {"file": "${GATEWAY_API_KEY_FILE:-./secrets/api_key}"}
    assert gateway["depends_on"] == {"gateway-port": {"condition": "service_started"},
                                     "torchserve": {"condition": "service_healthy"}}
    env = gateway["environment"]
    assert env["GATEWAY_UPSTREAM"] == "torchserve:8080"
    assert env["GATEWAY_MAX_BODY_SIZE"] == "${GATEWAY_MAX_BODY_SIZE:-2m}"
    assert env["GATEWAY_RATE"] == "${GATEWAY_RATE:-50r/s}" and env["GATEWAY_BURST"] == "${GATEWAY_BURST:-100}"
    # Longer than TorchServe's default_response_timeout, so TorchServe's own timeout answers first.
    timeout = int(re.fullmatch(r"\$\{GATEWAY_PROXY_TIMEOUT:-(\d+)\}", env["GATEWAY_PROXY_TIMEOUT"]).group(1))
    assert timeout > ServingSettings().response_timeout_s
    assert gateway["healthcheck"]["test"][-1] == "http://127.0.0.1:8080/health"
    assert gateway["restart"] == "unless-stopped"


def test_gateway_port_holds_the_socket_the_gateway_listens_on() -> None:
    """gateway-port holds GATEWAY_LISTEN's socket under a name; the gateway asks for it under the same name and
    listens on the same address, which is what makes nginx take the held socket rather than bind its own."""
    services = variant(BASE, CPU)["services"]
    holder, gateway = services["gateway-port"], services["gateway"]
    assert holder["command"] == ["--hold"] and holder["image"] == gateway["image"]
    assert holder["build"] == gateway["build"]  # either may build the image first
    for name in ("GATEWAY_LISTEN", "GATEWAY_LISTEN_HOLDER"):
        assert holder["environment"][name] == gateway["environment"][name], name
    assert holder["environment"]["GATEWAY_LISTEN_HOLDER"] in holder["healthcheck"]["test"]
    assert holder["ports"][0].endswith(":" + holder["environment"]["GATEWAY_LISTEN"])
    assert holder["read_only"] is True and holder["cap_drop"] == ["ALL"]
    assert holder["security_opt"] == ["no-new-privileges:true"] and holder["restart"] == "unless-stopped"


def test_gateway_dockerfile_is_debian_nginx_non_root() -> None:
    text = (ROOT / "docker" / "gateway" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=debian:bookworm-slim" in text and "FROM ${BASE_IMAGE}" in text
    assert re.search(r"apt-get install .*\bnginx\b", text)
    assert "--with-http_auth_request_module" in text  # the build fails if Debian's nginx lacks it
    assert re.search(r"^USER gateway$", text, re.M) and "--uid 1001" in text
    assert re.search(r"^HEALTHCHECK .*/health", text, re.M)
    assert re.search(r"^STOPSIGNAL SIGQUIT$", text, re.M)
    assert 'ENTRYPOINT ["/usr/local/bin/gateway-entrypoint"]' in text


def test_make_up_writes_a_private_api_key_first() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^up: .*secrets/api_key", makefile, re.M) and re.search(r"^up-cpu: .*secrets/api_key", makefile, re.M)
    rule = makefile[makefile.index("\nsecrets/api_key:"):]
    assert "chmod 0700 secrets" in rule and "token_urlsafe(32)" in rule
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()


def test_one_config_properties_and_the_container_keeps_management_on_loopback() -> None:
    """The image copies the committed config.properties; the container's addresses and store come from
    the serving settings' environment (GRU_ENCODER_*), so one file serves make serve and the container."""
    assert not (ROOT / "docker" / "config.properties").exists()
    text = (ROOT / "Dockerfile").read_text()
    assert "COPY config.properties /home/model-server/config.properties" in text
    env = dict(re.findall(r"(GRU_ENCODER_[A-Z_]+)=(\S+)", text))
    assert env["GRU_ENCODER_BIND"] == "0.0.0.0"  # inference and metrics on the internal network
    settings = ServingSettings.from_env(env)
    rendered = settings.torchserve_properties()
    assert rendered["inference_address"] == "http://0.0.0.0:8080" and rendered["metrics_address"] == "http://0.0.0.0:8082"
    assert rendered["management_address"] == "http://127.0.0.1:8081"  # never published, never on the network
    assert rendered["grpc_inference_address"] == rendered["grpc_management_address"] == "127.0.0.1"
    assert rendered["model_store"] == "/home/model-server/model-store"
    assert settings.ts_config == "/home/model-server/config.properties"
    props = properties("config.properties")
    # Registration (the model's versions, each replica's reconciler) only ever on loopback, only from the store.
    assert rendered["enable_model_api"] == "true" and props["disable_token_authorization"] == "true"
    assert rendered["allowed_urls"] == r"file:///home/model\\-server/model\\-store/[^/]+\\.mar", rendered["allowed_urls"]
    assert not set(props) & set(rendered), "config.properties repeats a key the serving settings own"


@pytest.mark.parametrize("names", [(BASE, GPU), (BASE, CPU)])
def test_compose_passes_every_deployed_serving_setting_through_without_a_default_of_its_own(names: tuple[str, ...]) -> None:
    """Deploy-time settings: the host's GRU_ENCODER_* reach the container (empty = the settings' default),
    exactly the settings gru_encoder/host/deploy_env.py says a deployment carries (a new field of
    ServingSettings fails here until it is passed through, or named there as the image's or the host's)."""
    env = variant(*names)["services"]["torchserve"]["environment"]
    expected = deploy_env.compose_environment()
    missing, unknown = sorted(set(expected) - set(env)), sorted(set(env) - set(expected))
    assert not missing, f"{BASE} does not pass {missing} through: `python -m gru_encoder.host.deploy_env --compose` prints the lines"
    assert not unknown, f"{BASE} passes {unknown}, which are not deployed serving settings (gru_encoder/host/deploy_env.py)"
    assert env == expected


def test_torchserve_service_mounts_read_only_restarts_and_checks_health() -> None:
    service = variant(BASE, GPU)["services"]["torchserve"]
    mounts = {m["target"]: m for m in service["volumes"]}
    assert set(mounts) == {"/home/model-server/model-store"}
    assert all(m["type"] == "bind" and m["read_only"] is True for m in mounts.values())
    assert mounts["/home/model-server/model-store"]["source"] == "${MODEL_STORE:-./model_store}"
    assert service["restart"] == "unless-stopped"
    health = service["healthcheck"]
    assert health["test"] == ["CMD", "python3", "/usr/local/bin/gru-encoder-healthcheck"]
    # The check sends a real prediction (not /ping, which stays healthy while a worker crash-loops).
    check = (ROOT / "docker" / "healthcheck.py").read_text()
    assert "/predictions/gru_encoder" in check and "/ping" not in check.split('"""')[2]


def test_locust_runs_master_and_workers_under_the_loadtest_profile() -> None:
    services = load(BASE)["services"]
    master, worker = services["locust-master"], services["locust-worker"]
    assert master["profiles"] == worker["profiles"] == ["loadtest"]
    assert "profiles" not in services["torchserve"] and "profiles" not in services["gateway"]
    assert "--master --host http://torchserve:8080" in master["command"]
    assert "--worker --master-host locust-master" in worker["command"]
    assert master["depends_on"]["torchserve"]["condition"] == "service_healthy"
    for service in (master, worker):
        mounts = {m["source"]: m for m in service["volumes"]}
        assert set(mounts) == {"./loadtests", "./gru_encoder"}  # the locustfile checks answers with gru_encoder.api.contract
        assert all(m["read_only"] is True and m["target"] == "/mnt/project/" + m["source"][2:] for m in mounts.values())
    entrypoint = (ROOT / "docker" / "locust.Dockerfile").read_text()
    assert '"/mnt/project/loadtests/locustfile.py"' in entrypoint
    assert (ROOT / "loadtests" / "locustfile.py").exists()


def test_dockerfile_is_bookworm_non_root_tini_with_a_real_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=debian:bookworm-slim" in text
    assert "openjdk-17-jre-headless" in text and "tini" in text
    # The pins come from pyproject.toml's serve extra (with core's), not from a list of their own.
    assert "docker/extra-pins.py /src/pyproject.toml serve)" in text and "pip check" in text
    pins = set(re.findall(r"([\w-]+)==\d", text))
    assert pins == {"pip"}, f"versions pinned in the Dockerfile instead of pyproject.toml: {pins}"  # pip as in the Makefile
    assert re.search(r"^USER model-server$", text, re.M)
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in text
    assert 'CMD ["python3", "-m", "gru_encoder.host.serve"]' in text  # the same launcher as make serve
    assert re.search(r"^HEALTHCHECK .*gru-encoder-healthcheck", text, re.M)


def test_served_image_installs_the_serve_extra_only() -> None:
    """No training stack in the served image: the serve extra resolves to core + TorchServe + pyyaml + requests
    (each replica's reconciler and `gru-encoder models` in the image)."""
    spec = importlib.util.spec_from_file_location("extra_pins", ROOT / "docker" / "extra-pins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pins = module.pins
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    served = {p.split("==")[0] for p in pins(project, ["serve"])}
    assert served == {"torch", "safetensors", "numpy", "pydantic", "orjson", "torchserve", "pyyaml", "requests"}
    assert {p.split("==")[0] for p in pins(project, ["client"])} == {"requests", "numpy"}
    assert project["dependencies"] == []
