"""The serving settings a deployment carries, rendered from ServingSettings (the one definition):
Kubernetes' serving.env from the settings' defaults, and the GRU_ENCODER_* variables that
docker-compose.yml and docker/swarm/stack.yml pass through to TorchServe. Standard library only.

    python -m gru_encoder.host.deploy_env             # print serving.env
    python -m gru_encoder.host.deploy_env --write     # write deploy/kubernetes/base/serving.env (make deploy-env)
    python -m gru_encoder.host.deploy_env --check     # exit 1 when the file differs from the settings
    python -m gru_encoder.host.deploy_env --compose   # the pass-through lines of compose's environment

Every field of ServingSettings is a deploy-time setting unless it is named below with its reason, so a
new field reaches serving.env by rule; tests/unit/test_deploy_env.py fails until compose and the stack
pass it through too (or until it is named here).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

from gru_encoder.host.settings import ENV_PREFIX, ServingSettings

SERVING_ENV = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "base" / "serving.env"
COMMAND = "make deploy-env (python -m gru_encoder.host.deploy_env --write)"

# Set by the image, not by a deployment. The container needs other values than the local defaults here
# (bind 0.0.0.0 puts inference and metrics on the container's network; the paths exist only inside the
# image), and the Dockerfile's ENV is their one source: every deployment runs that image, and `docker
# run` without any deployment file needs them too. A deployment file restating them would be a second
# copy to drift (the tests refuse one, and hold the Dockerfile's ENV to this list).
IMAGE_FIXED = ("bind", "model_store", "ts_config", "batch_fill_agent", "log_dir")
# The launcher's local choices, which a container keeps at their defaults:
# - the ports: the image's (EXPOSE 8080), and the manifests' containerPorts, the health check, the
#   gateway's upstream and the Services all name them, so set through the environment they would break
#   those, not reconfigure them;
# - the archive's file name: the image copies the .mar in as gru_encoder.mar, and the model store compose
#   mounts must hold that name;
# - the local gateway (make serve without Docker: its switch, TorchServe's port behind it, its key file
#   and template): a deployment runs the gateway as a service of its own (docker/gateway, gateway.yaml)
#   in front of TorchServe on bind:port, so it stays off there.
HOST_ONLY = ("port", "management_port", "metrics_port", "grpc_port", "grpc_management_port", "mar",
             "gateway", "torchserve_port", "api_keys", "gateway_template")
NOT_DEPLOYED = IMAGE_FIXED + HOST_ONLY


def env_name(name: str) -> str:
    """The variable of a setting: workers -> GRU_ENCODER_WORKERS."""
    return ENV_PREFIX + name.upper()


def deployed_fields() -> list[dataclasses.Field]:
    """The settings a deployment carries, in ServingSettings' order: every field not in NOT_DEPLOYED."""
    return [f for f in dataclasses.fields(ServingSettings) if f.name not in NOT_DEPLOYED]


def deployed_env(settings: ServingSettings | None = None) -> dict[str, str]:
    """GRU_ENCODER_<NAME> -> value of every deployed setting (the defaults unless `settings` is given)."""
    settings = ServingSettings() if settings is None else settings
    out = {}
    for f in deployed_fields():
        value = str(getattr(settings, f.name))
        if "\n" in value or value != value.strip():  # an env file line holds the value verbatim
            raise ValueError(f"{f.name}={value!r}: cannot be written as one line of an env file")
        out[env_name(f.name)] = value
    return out


def render_serving_env(settings: ServingSettings | None = None) -> str:
    """deploy/kubernetes/base/serving.env: a header, then each deployed setting with its help as a comment."""
    lines = [
        "# The serving settings of the TorchServe pods (the gru-encoder-serving ConfigMap), from the defaults of",
        "# ServingSettings (gru_encoder/host/settings.py). Generated: do not edit; run",
        f"#   {COMMAND}",
        "# after changing a default there. One deployment's own values belong in its overlay (a",
        "# configMapGenerator of the same name with `behavior: merge`). Not here (deploy_env.py says why): the",
        "# address and paths the image sets (the Dockerfile's ENV), the ports, the archive's name and the local",
        "# gateway, which a container keeps at their defaults.",
    ]
    values = deployed_env(settings)
    for f in deployed_fields():
        help_text = f.metadata.get("help")
        lines += [""] + ([f"# {help_text}"] if help_text else []) + [f"{env_name(f.name)}={values[env_name(f.name)]}"]
    return "\n".join(lines) + "\n"


def compose_environment() -> dict[str, str]:
    """What compose and the stack give TorchServe: each deployed variable from the host's environment,
    empty (= the settings' default) when unset."""
    return {name: "${%s:-}" % name for name in deployed_env()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--write", action="store_true", help="write serving.env (to --path)")
    what.add_argument("--check", action="store_true", help="exit 1 when serving.env (at --path) differs from the settings")
    what.add_argument("--compose", action="store_true", help="print the GRU_ENCODER_* lines of a compose service's environment")
    parser.add_argument("--path", type=Path, default=SERVING_ENV, help="the serving.env file (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.compose:
        print("\n".join(f"{name}: {value}" for name, value in compose_environment().items()))
        return 0
    text = render_serving_env()
    if args.write:
        args.path.write_text(text)
        print(f"wrote {args.path} ({len(deployed_fields())} settings)")
    elif args.check:
        current = args.path.read_text() if args.path.is_file() else ""
        if current != text:
            print(f"{args.path} differs from the serving settings: run {COMMAND}", file=sys.stderr)
            return 1
        print(f"{args.path}: ok")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
