"""The local gateway of `make serve`: the deployed gateway's own entrypoint and nginx configuration
(docker/gateway), run with the host's nginx in front of TorchServe, so that the public routes, their
answers and their error shapes are the same with and without Docker (tests/integration/test_local_gateway.py).

Only the addresses differ from the container: nginx listens on the settings' bind:port and finds TorchServe
on 127.0.0.1:torchserve_port; its rendered config, pid and sockets live in <log_dir>/gateway. Without API
keys (the default on 127.0.0.1) every caller is the one key "local", whose per-key limits are then as wide
as the address's; with --api-keys FILE the keys and limits are the container's. Any GATEWAY_* variable
set in the environment (docker/gateway/entrypoint.sh lists them) wins over these defaults.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gru_encoder.host import versions
from gru_encoder.host.settings import ServingSettings

ENTRYPOINT = "entrypoint.sh"  # beside the template


def nginx_binary() -> str | None:
    """nginx on PATH, or Debian's /usr/sbin/nginx (not on an ordinary user's PATH)."""
    return shutil.which("nginx") or (str(Path("/usr/sbin/nginx")) if Path("/usr/sbin/nginx").exists() else None)


def gateway_env(settings: ServingSettings, log_dir: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The entrypoint's environment: the settings' addresses and keys, under the caller's GATEWAY_* values."""
    environ = dict(os.environ if environ is None else environ)
    conf_dir = log_dir / "gateway"
    defaults = {
        "GATEWAY_CONF_DIR": str(conf_dir),
        "GATEWAY_TEMPLATE": str(Path(settings.gateway_template).resolve()),
        "GATEWAY_LISTEN": f"{settings.bind}:{settings.port}",
        "GATEWAY_STATUS_LISTEN": f"unix:{conf_dir / 'status.sock'}",
        "GATEWAY_UPSTREAM": f"127.0.0.1:{settings.torchserve_port}",
        "GATEWAY_PROXY_TIMEOUT": str(settings.response_timeout_s + 30),
        "GATEWAY_WORKERS": "1",
        # Which version answers unpinned requests (gru-encoder models writes it beside versions.json).
        "GATEWAY_RELEASE_FILE": str(versions.release_path(Path(settings.model_store).resolve())),
        "GATEWAY_RELEASE_POLL": "0.5",
    }
    if settings.api_keys:
        defaults["GATEWAY_API_KEYS_FILE"] = str(Path(settings.api_keys).resolve())
    else:  # one local caller: its key's limits as wide as an address's
        defaults.update({"GATEWAY_AUTH": "off", "GATEWAY_KEY_INFLIGHT": "256", "GATEWAY_RATE": "10000r/s", "GATEWAY_BURST": "10000"})
    path = environ.get("PATH", os.defpath)
    if "/usr/sbin" not in path.split(os.pathsep):
        path += os.pathsep + "/usr/sbin"  # Debian's nginx
    return {**environ, **defaults, **{k: v for k, v in environ.items() if k.startswith("GATEWAY_")}, "PATH": path}


def gateway_command(settings: ServingSettings) -> list[str]:
    """The entrypoint, which checks and renders the configuration, then runs nginx in the foreground."""
    return ["bash", str(Path(settings.gateway_template).resolve().with_name(ENTRYPOINT))]
