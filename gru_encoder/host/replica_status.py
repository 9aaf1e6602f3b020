"""What this replica serves, asked where it runs (its management API listens on its own loopback only):

    python3 -m gru_encoder.host.replica_status                      # {"replica", "default", "versions": {version: ready workers}}
    python3 -m gru_encoder.host.replica_status --version 2.0        # waits until 2.0 answers, adds its "answer" to CHECK_TEXTS

`gru-encoder models --compose ...` runs it in every TorchServe replica (docker compose exec) to know that each
one serves a version, and serves it with the run's weights, before the gateway sends callers to it; on
Kubernetes, `kubectl exec` runs it in each pod (docs/DEPLOY.md). It reads the settings the launcher wrote
(<log_dir>/serving-settings.json), else the GRU_ENCODER_* variables. One JSON object on stdout; exit 1 with
the reason on stderr when the version does not answer in time.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path
from typing import Sequence

import requests

from gru_encoder.host import traffic
from gru_encoder.host.models_cli import CHECK_TEXTS, CommandError, Management
from gru_encoder.host.settings import ServingSettings
from gru_encoder.host.versions import MODEL_NAME

PREFIX = "gru-encoder replica:"


def settings_here() -> ServingSettings:
    settings = ServingSettings.from_env()
    written = Path(settings.log_dir) / "serving-settings.json"
    return ServingSettings(**json.loads(written.read_text())) if written.is_file() else settings


def traffic_of(settings: ServingSettings, served: dict[str, int]) -> dict[str, dict[str, float | None]]:
    """Each served version's newest pinned request and requests answered on this replica (host/traffic.py);
    empty when its metrics do not answer."""
    try:
        text = traffic.fetch(f"http://127.0.0.1:{settings.metrics_port}/metrics")
    except traffic.TrafficError:
        return {"last_pinned": {}, "requests": {}}
    return {"last_pinned": {v: traffic.last_pinned(text, v) for v in served},
            "requests": {v: traffic.requests_served(text, v) for v in served}}


def status(settings: ServingSettings, version: str | None, timeout: float) -> dict:
    management = Management(f"http://127.0.0.1:{settings.management_port}", timeout=10)
    deadline, last = time.monotonic() + timeout, "not registered"
    while True:
        try:
            served = management.registered()
            if version is None or served.get(version, 0) > 0:
                report = {"replica": socket.gethostname(), "default": management.default(), "versions": served,
                          **traffic_of(settings, served)}
                if version is None:
                    return report
                url = settings.torchserve_url().replace("//0.0.0.0:", "//127.0.0.1:")
                r = requests.post(f"{url}/predictions/{MODEL_NAME}/{version}",
                                  json={"texts": list(CHECK_TEXTS), "return": ["output", "hidden"]}, timeout=30)
                if r.status_code == 200:
                    return {**report, "answer": r.json()}
                last = f"HTTP {r.status_code}: {r.text[:200]}"
        except (CommandError, requests.RequestException) as e:
            last = str(e)[:300]
        if time.monotonic() > deadline:
            raise CommandError(f"version {version} does not answer on {socket.gethostname()} after {timeout:.0f} s ({last}): "
                               "see this replica's log (gru-encoder reconcile: lines)")
        time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", help="wait until this version answers, and show its answer to the check texts")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for it")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(status(settings_here(), args.version, args.timeout)))
    except CommandError as e:
        print(f"{PREFIX} {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
