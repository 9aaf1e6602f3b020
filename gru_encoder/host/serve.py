"""Start TorchServe with the resolved serving settings: the one entry point of `make serve` and the container.

    python -m gru_encoder.host.serve                       # settings from GRU_ENCODER_* variables and defaults
    python -m gru_encoder.host.serve --port 8090 --workers 4
    python -m gru_encoder.host.serve --print-config        # the rendered config.properties, nothing started
    python -m gru_encoder.host.serve --gateway local       # make serve: the gateway's nginx in front (host/gateway.py)

It checks what would otherwise fail deep inside TorchServe (no Java, no archive, a port already taken)
and says how to fix it in one line; renders config.properties (the committed file's fixed settings plus
the addresses, the model's workers/batching/timeout and the size limits) into the log folder beside
the resolved settings (serving-settings.json); passes the settings to the workers (GRU_ENCODER_SETTINGS);
and runs TorchServe in the foreground. Every version of <model_store>/versions.json is registered at start
(host/versions.py; none: version 1.0 of the settings' archive), and once TorchServe answers, the launcher
makes the state's default TorchServe's default (PUT /models/gru_encoder/<default>/set-default).
SIGTERM/SIGINT stop it cleanly (exit 0); when TorchServe dies on its own the launcher exits 1, so a
container ends and its restart policy applies.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from gru_encoder.host.config_cli import build_parser
from gru_encoder.host.gateway import gateway_command, gateway_env, nginx_binary
from gru_encoder.host.metrics import metrics_config
from gru_encoder.host.settings import METRICS_CONFIG, RESOLVED_ENV, ServingSettings
from gru_encoder.host import versions
from gru_encoder.host.reconcile import Reconciler
from gru_encoder.host.versions import MODEL_NAME, VersionError

PREFIX = "gru-encoder-serve:"


class LaunchError(RuntimeError):
    """Something TorchServe would fail on later, said in one line with its fix."""


def parse_args(argv: Sequence[str] | None) -> tuple[ServingSettings, argparse.Namespace]:
    parser = build_parser(ServingSettings)
    parser.add_argument("--print-config", action="store_true", default=argparse.SUPPRESS,
                        help="print the rendered config.properties and exit")
    given = vars(parser.parse_args(argv))
    print_config = given.pop("print_config", False)
    try:
        settings = ServingSettings.from_env(**given)
    except ValueError as e:  # one line that names the setting, not argparse's usage text
        raise LaunchError(str(e)) from None
    return settings, argparse.Namespace(print_config=print_config)


def read_properties_text(text: str) -> dict[str, str]:
    """key=value lines of a Java properties file (comments and blank lines skipped)."""
    lines = text.splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith(("#", "!")))


def read_properties(path: Path) -> dict[str, str]:
    return read_properties_text(path.read_text())


def render_config(settings: ServingSettings) -> str:
    """The committed config.properties with the settings' keys added. A key set in both is refused: the
    settings are the one source of what they cover."""
    path = Path(settings.ts_config)
    if not path.is_file():
        raise LaunchError(f"{path} not found: run from the project folder or pass --ts-config PATH")
    fixed = read_properties(path)
    try:
        generated = settings.torchserve_properties()
    except VersionError as e:
        raise LaunchError(str(e)) from None
    clash = sorted(set(fixed) & set(generated))
    if clash:
        raise LaunchError(f"{path} sets {', '.join(clash)}, which come from the serving settings: remove them there "
                          f"and use flags or GRU_ENCODER_* variables (python -m gru_encoder.host.serve --help)")
    lines = [f"# Rendered by python -m gru_encoder.host.serve from {path} and the serving settings; not edited by hand."]
    lines += [f"{k}={v}" for k, v in {**fixed, **generated}.items()]
    return "\n".join(lines) + "\n"


def write_metrics_config(path: Path) -> None:
    """TorchServe's default metrics config with the handler's metrics declared (gru_encoder/host/metrics.py):
    in prometheus mode TorchServe exposes only declared backend metrics."""
    import ts  # TorchServe's Python package (the serve extra), for its default config
    import yaml

    default = yaml.safe_load((Path(ts.__file__).parent / "configs" / "metrics.yaml").read_text())
    path.write_text("# Rendered by python -m gru_encoder.host.serve: TorchServe's default metrics and gru_encoder/host/metrics.py\n"
                    + yaml.safe_dump(metrics_config(default), sort_keys=False))


def check_ready(settings: ServingSettings) -> None:
    """Java, the archive, every port and the batch-fill agent, before TorchServe prints a stack trace about them."""
    if shutil.which("java") is None:
        raise LaunchError("java not found: TorchServe needs Java 17 (make java, or apt-get install openjdk-17-jdk-headless)")
    try:
        state = settings.served_versions()
    except VersionError as e:
        raise LaunchError(str(e)) from None
    if state.saved:  # recorded versions: each archive must still hold its recorded weights
        changed = versions.changed_archives(settings.model_store, state)
        if changed:
            raise LaunchError(changed[0])
    for version in state.versions:
        mar = Path(settings.model_store) / version.mar
        if not mar.is_file():
            fix = "build it with make archive (or pass --model-store FOLDER)" if version.mar == settings.mar else \
                  f"rebuild it (python -m training.archive --run-dir RUN --version {version.version}) or remove the version " \
                  f"from {Path(settings.model_store) / 'versions.json'}"
            raise LaunchError(f"{mar} not found: {fix}" + ("" if version.mar == settings.mar else f" (version {version.version})"))
    ports = [("port", settings.bind, settings.port), ("management_port", "127.0.0.1", settings.management_port),
             *([("torchserve_port", "127.0.0.1", settings.torchserve_port)] if settings.gateway == "local" else []),
             ("metrics_port", settings.bind, settings.metrics_port), ("grpc_port", "127.0.0.1", settings.grpc_port),
             ("grpc_management_port", "127.0.0.1", settings.grpc_management_port)]
    seen: dict[int, str] = {}
    for name, host, port in ports:
        if port in seen:
            raise LaunchError(f"--{name.replace('_', '-')} {port} is also --{seen[port].replace('_', '-')}: give each port its own number")
        seen[port] = name
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM binds: TIME_WAIT is no conflict
            try:
                s.bind((host, port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise LaunchError(f"cannot listen on {host}:{port} ({e.strerror}): check --bind") from None
                flag, var = f"--{name.replace('_', '-')}", f"GRU_ENCODER_{name.upper()}"
                make = " (make serve PORT=...)" if name == "port" else f" (make serve SERVE_ARGS='{flag} ...')"
                raise LaunchError(f"{host}:{port} ({name}) is already taken, perhaps by another TorchServe or make serve: "
                                  f"stop it, or choose another with {flag} or {var}{make}") from None
    if settings.gateway == "local":
        if nginx_binary() is None:
            raise LaunchError("nginx not found: the local gateway runs the host's nginx (make nginx, or apt-get install nginx-light), "
                              "or serve TorchServe alone with --gateway off")
        if not Path(settings.gateway_template).is_file():
            raise LaunchError(f"{settings.gateway_template} not found: run from the project folder or pass --gateway-template PATH")
        if settings.api_keys and not Path(settings.api_keys).is_file():
            raise LaunchError(f"{settings.api_keys} not found: put one API key per line in it (make api-key writes secrets/api_key)")
    agent = Path(settings.batch_fill_agent)
    if settings.batch_fill == "queued" and not agent.is_file():
        raise LaunchError(f"{agent} not found: batch_fill=queued needs the batch-fill agent; build it with make java (a JDK 17), "
                          f"pass --batch-fill-agent PATH, or serve with --batch-fill wait")


def set_default(management_url: str, version: str, timeout: float = 10.0) -> int:
    """PUT set-default on TorchServe's management API; its HTTP status (0: no answer)."""
    request = urllib.request.Request(f"{management_url}/models/{MODEL_NAME}/{version}/set-default", method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def enforce_default(settings: ServingSettings, proc: subprocess.Popen, timeout: float = 300.0) -> bool:
    """Once TorchServe's management API answers, make the state's default its default (TorchServe's own
    defaultVersion at start-up is not reliable: pytorch/serve#2744). True when done."""
    state = settings.served_versions()
    url = f"http://127.0.0.1:{settings.management_port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        status = set_default(url, state.default)
        if status == 200:
            print(f"{PREFIX} default version {state.default} of {', '.join(state.names())}", flush=True)
            return True
        time.sleep(0.2)
    if proc.poll() is None:
        print(f"{PREFIX} could not make {state.default} the default version in {timeout:.0f} s: "
              f"curl -X PUT {url}/models/{MODEL_NAME}/{state.default}/set-default", file=sys.stderr, flush=True)
    return False


def run(settings: ServingSettings) -> int:
    """Run TorchServe in the foreground; 0 when stopped by a signal, 1 when it died on its own."""
    log_dir = Path(settings.log_dir).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    config = log_dir / "config.properties"
    config.write_text(render_config(settings))
    (log_dir / "serving-settings.json").write_text(settings.to_json() + "\n")
    write_metrics_config(log_dir / METRICS_CONFIG)
    print(f"{PREFIX} settings {settings.to_json()}", flush=True)
    print(f"{PREFIX} TorchServe config {config}; inference on {settings.torchserve_url()}", flush=True)
    state = settings.served_versions()
    if state.saved:  # the gateway's release file, as this state says (a read-only store keeps the one it has)
        try:
            versions.write_release(settings.model_store, state)
        except OSError as e:
            print(f"{PREFIX} the release file {versions.release_path(settings.model_store)} is not written ({e.strerror}): "
                  "the gateway keeps the one it has", flush=True)
    # The workers find versions.json (GET /info) wherever TorchServe runs them: the store's absolute path.
    worker_settings = replace(settings, model_store=str(Path(settings.model_store).resolve()))
    env = {**os.environ, RESOLVED_ENV: worker_settings.to_json(),
           "LOG_LOCATION": os.environ.get("LOG_LOCATION", str(log_dir)),
           "METRICS_LOCATION": os.environ.get("METRICS_LOCATION", str(log_dir))}
    torchserve = Path(sys.executable).with_name("torchserve")
    cmd = [str(torchserve if torchserve.exists() else "torchserve"), "--start", "--foreground", "--ncs",
           "--disable-token-auth", "--ts-config", str(config)]
    log_config = Path(settings.ts_config).with_name("log4j2.xml")  # TorchServe's logging without per-request lines
    if log_config.is_file():
        cmd += ["--log-config", str(log_config.resolve())]
    pid_file = Path(tempfile.gettempdir()) / ".model_server.pid"  # where TorchServe's launcher writes the frontend's pid
    pid_file.unlink(missing_ok=True)  # a restarted container keeps /tmp: never signal a stale pid
    proc = subprocess.Popen(cmd, env=env)
    # The local gateway opens once the state's default is TorchServe's: no caller of the unpinned routes
    # gets another version's answer while TorchServe starts on the wrong one (pytorch/serve#2744).
    defaulted = threading.Event()
    # From then on, every new generation of versions.json is applied to this TorchServe (host/reconcile.py).
    reconciler = Reconciler(settings, state)

    def default_then_open() -> None:
        try:
            enforce_default(settings, proc)
        finally:  # whatever happened (it is logged), the gateway opens
            defaulted.set()
            reconciler.start()

    threading.Thread(target=default_then_open, daemon=True, name="set-default").start()
    gateway: subprocess.Popen | None = None
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        # TorchServe's launcher neither forwards signals nor returns the frontend's status: signal the
        # Java frontend itself, which shuts its workers down. nginx finishes what it holds (SIGQUIT).
        nonlocal stopping
        stopping = True
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGQUIT)
        try:
            frontend = int(pid_file.read_text().strip())
            os.kill(frontend, signal.SIGTERM)
            print(f"{PREFIX} {signal.Signals(signum).name} sent on to TorchServe (pid {frontend})", flush=True)
        except (OSError, ValueError):
            proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while proc.poll() is None and (gateway is None or gateway.poll() is None or stopping):
        if settings.gateway == "local" and gateway is None and defaulted.is_set() and not stopping:
            gateway = subprocess.Popen(gateway_command(settings), env=gateway_env(settings, log_dir))
            print(f"{PREFIX} gateway (docker/gateway's nginx) on http://{settings.bind}:{settings.port}, "
                  f"TorchServe behind it on {settings.torchserve_url()}", flush=True)
        try:
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
    if not stopping:  # one of the two died on its own: stop the other, and say which
        died = "TorchServe" if proc.poll() is not None else "the gateway"
        stop(signal.SIGTERM, None)
        proc.wait()
        if gateway is not None:
            gateway.wait(timeout=30)
        print(f"{PREFIX} {died} exited on its own", file=sys.stderr, flush=True)
        return 1
    if gateway is not None:
        gateway.wait(timeout=30)
    print(f"{PREFIX} TorchServe stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings, opts = parse_args(argv)
        if opts.print_config:
            sys.stdout.write(render_config(settings))
            return 0
        check_ready(settings)
        return run(settings)
    except LaunchError as e:
        print(f"{PREFIX} {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
