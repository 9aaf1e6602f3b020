"""The serving settings, defined once: TorchServe's per-model settings, the handler's threads and limits,
and where the server listens. Standard library only (and the API floor's limit defaults).

Every field can be set at deploy time without rebuilding the .mar: a flag of `python -m gru_encoder.host.serve`
(`--workers 4`), or an environment variable named after it (`GRU_ENCODER_WORKERS=4`); flags win over the
environment, the environment over these defaults. The launcher hands the resolved settings to
TorchServe (a rendered config.properties) and to the handler (GRU_ENCODER_SETTINGS, JSON), so both see
the same values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from gru_encoder.api.limits import DEFAULT_LIMITS
from gru_encoder.host import versions

if TYPE_CHECKING:
    from gru_encoder.api.schema import Limits

ENV_PREFIX = "GRU_ENCODER_"
RESOLVED_ENV = "GRU_ENCODER_SETTINGS"  # the launcher's resolved settings, as JSON, for the workers
METRICS_CONFIG = "metrics.yaml"  # in log_dir: TorchServe's metrics config, rendered by the launcher
BATCH_FILLS = ("queued", "wait")
GATEWAYS = ("off", "local")


@dataclass(frozen=True)
class ServingSettings:
    """Serve the encoder archive with TorchServe (flags and GRU_ENCODER_* variables override each default)."""

    # TorchServe's per-model settings. Tuned on 2 CPU cores (docs/PERFORMANCE.md): two workers of one
    # torch thread each beat one worker of two threads. TorchServe on its own holds every batch, a lone
    # request's too, for the whole batch delay (1 ms at least: maxBatchDelay 0 is not "no delay" in
    # TorchServe 0.12, a lone request then waited 115 ms; the launcher refuses it). batch_fill "queued"
    # hands TorchServe the batch-fill agent (java/BatchFillAgent.java): a batch then takes the requests
    # already waiting and goes at once, and busy queues still fill batches.
    workers: int = field(default=2, metadata={"help": "TorchServe workers (processes) for the model"})
    batch_size: int = field(default=16, metadata={"help": "requests merged into one packed forward pass"})
    batch_fill: str = field(default="queued", metadata={"help": "queued: a batch takes the requests already waiting and goes at once "
                                                                 "(TorchServe patched by the batch-fill agent); wait: TorchServe's own, "
                                                                 "every batch waits max_batch_delay_ms for more"})
    max_batch_delay_ms: int = field(default=1, metadata={"help": "with batch_fill=wait, how long a batch waits to fill (>= 1)"})
    batch_fill_agent: str = field(default="build/batch-fill-agent.jar", metadata={"help": "the batch-fill agent's jar (make java builds it)"})
    response_timeout_s: int = field(default=30, metadata={"help": "a request past this kills its worker"})
    job_queue_size: int = field(default=100, metadata={"help": "queued requests before fast 503s"})
    torch_threads: int = field(default=0, metadata={"help": "per worker; 0 = this process's CPUs (cgroup quota, affinity) / workers"})
    # The handler's per-request limits (gru_encoder/api/schema.py: Limits).
    max_texts: int = field(default=DEFAULT_LIMITS["max_texts"], metadata={"help": "most texts in one request"})
    max_text_chars: int = field(default=DEFAULT_LIMITS["max_text_chars"], metadata={"help": "most characters in one text"})
    max_body_bytes: int = field(default=DEFAULT_LIMITS["max_response_bytes"], metadata={"help": "largest request and response body"})
    # The work one request may cost, checked before each expensive step (docs/API.md, "Limits"):
    # NFKC can make a text 18 times longer (U+FDFA), and each later step costs in proportion.
    max_request_chars: int = field(default=DEFAULT_LIMITS["max_request_chars"], metadata={"help": "most characters a request's texts hold after Unicode normalization (NFKC), all texts together"})
    max_request_tokens: int = field(default=DEFAULT_LIMITS["max_request_tokens"], metadata={"help": "most tokens (<eos> included) a request's texts hold, all together"})
    truncate_chars: int = field(default=DEFAULT_LIMITS["truncate_chars"], metadata={"help": "with truncate, each text is first cut to this many characters"})
    # Where it listens. Management and gRPC stay on loopback wherever the inference port is bound.
    bind: str = field(default="127.0.0.1", metadata={"help": "address of the inference and metrics ports"})
    port: int = field(default=8080, metadata={"help": "inference port"})
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_port: int = 7070
    grpc_management_port: int = 7071
    # The local gateway (make serve): the deployed gateway's own configuration (docker/gateway) run with
    # the host's nginx on bind:port, in front of TorchServe on 127.0.0.1:torchserve_port, so that the
    # same public routes answer the same way without Docker. Off in the container, where the gateway is
    # a service of its own and TorchServe takes bind:port itself.
    gateway: str = field(default="off", metadata={"help": "local: the gateway's nginx on bind:port in front of TorchServe; off: TorchServe alone"})
    torchserve_port: int = field(default=8083, metadata={"help": "with gateway=local, TorchServe's inference port on 127.0.0.1"})
    api_keys: str = field(default="", metadata={"help": "with gateway=local, a file of API keys (one a line) to ask for; empty: none asked"})
    gateway_template: str = field(default="docker/gateway/nginx.conf.template", metadata={"help": "the gateway's nginx template"})
    model_store: str = field(default="model_store", metadata={"help": "folder holding the .mar"})
    mar: str = field(default="gru_encoder.mar", metadata={"help": "the archive's file name in model_store"})
    ts_config: str = field(default="config.properties", metadata={"help": "TorchServe's fixed settings"})
    log_dir: str = field(default="logs", metadata={"help": "TorchServe's logs, the rendered config and these settings"})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{f.name}={value!r}: a whole number >= 0 ({ENV_PREFIX}{f.name.upper()} or --{_flag(f.name)})")
        positive = ("workers", "batch_size", "max_batch_delay_ms", "response_timeout_s", "job_queue_size", "max_texts", "max_text_chars",
                    "max_request_chars", "max_request_tokens", "truncate_chars")
        for name in positive:
            if getattr(self, name) < 1:
                hint = " (0 makes TorchServe wait ~115 ms for a lone request)" if name == "max_batch_delay_ms" else ""
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1{hint}")
        if self.gateway not in GATEWAYS:
            raise ValueError(f"gateway={self.gateway!r}: one of {', '.join(GATEWAYS)}")
        if self.batch_fill not in BATCH_FILLS:
            raise ValueError(f"batch_fill={self.batch_fill!r}: one of {', '.join(BATCH_FILLS)}")
        if any(c.isspace() for c in self.batch_fill_agent):
            # TorchServe splits vmargs on whitespace.
            raise ValueError(f"batch_fill_agent={self.batch_fill_agent!r}: a path without spaces")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes={self.max_body_bytes}: must be >= 1024")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServingSettings:
        """Defaults, then GRU_ENCODER_<FIELD> variables, then `overrides`; GRU_ENCODER_SETTINGS (the
        launcher's resolved JSON) stands in for all the variables when present."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if environ.get(RESOLVED_ENV):
            # Only the fields this version defines: an archive built before a setting was added still
            # loads under a newer launcher (the setting is the launcher's or TorchServe's business then).
            known = {f.name for f in dataclasses.fields(cls)}
            values.update({k: v for k, v in json.loads(environ[RESOLVED_ENV]).items() if k in known})
        else:
            for f in dataclasses.fields(cls):
                raw = environ.get(ENV_PREFIX + f.name.upper())
                if raw is not None and raw != "":
                    values[f.name] = _parse(f, raw)
        values.update(overrides)
        return cls(**values)

    def limits(self) -> Limits:
        """The request limits the handler applies (the API floor's type: it never sees these settings)."""
        from gru_encoder.api.schema import Limits  # pydantic: only where requests are validated

        return Limits(max_texts=self.max_texts, max_text_chars=self.max_text_chars, max_response_bytes=self.max_body_bytes,
                      max_request_chars=self.max_request_chars, max_request_tokens=self.max_request_tokens,
                      truncate_chars=self.truncate_chars)

    def info(self) -> dict[str, dict[str, Any]]:
        """The limits and batching GET /info reports (api.info.model_info's last two arguments)."""
        return {"limits": {"max_texts": self.max_texts, "max_text_chars": self.max_text_chars, "max_body_bytes": self.max_body_bytes},
                "batching": {"batch_size": self.batch_size, "batch_fill": self.batch_fill, "max_batch_delay_ms": self.max_batch_delay_ms}}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def threads_per_worker(self, cpus: float | None = None) -> int:
        """torch threads for each worker on CPU: the setting, else this process's CPUs shared out."""
        if self.torch_threads:
            return self.torch_threads
        cpus = available_cpus() if cpus is None else cpus
        return max(1, int(cpus) // self.workers)

    def torchserve_url(self) -> str:
        """TorchServe's inference address: bind:port, or behind the local gateway 127.0.0.1:torchserve_port."""
        return f"http://127.0.0.1:{self.torchserve_port}" if self.gateway == "local" else f"http://{self.bind}:{self.port}"

    def served_versions(self) -> versions.State:
        """The versions to serve: <model_store>/versions.json, else the one version 1.0 of `mar`."""
        return versions.load(self.model_store, self.mar)

    def torchserve_properties(self, state: versions.State | None = None) -> dict[str, str]:
        """What the launcher adds to config.properties: addresses, every served version with its workers and
        the batching (the default marked, though TorchServe's start-up may not honour it: the launcher sets
        it again once TorchServe is up), the size limits."""
        state = self.served_versions() if state is None else state
        models = {v.version: {
            "defaultVersion": v.version == state.default, "marName": v.mar,
            "minWorkers": v.workers or self.workers, "maxWorkers": v.workers or self.workers, "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms, "responseTimeout": self.response_timeout_s,
        } for v in state.versions}
        return {
            "inference_address": self.torchserve_url(),
            "management_address": f"http://127.0.0.1:{self.management_port}",
            "metrics_address": f"http://{self.bind}:{self.metrics_port}",
            "grpc_inference_address": "127.0.0.1",
            "grpc_inference_port": str(self.grpc_port),
            "grpc_management_address": "127.0.0.1",
            "grpc_management_port": str(self.grpc_management_port),
            "model_store": str(Path(self.model_store).resolve()),
            # Registration: the model's versions (gru-encoder models, the launcher's reconciler) are registered
            # through the management API, which listens on 127.0.0.1 only, and could only ever name an archive
            # of the model store (allowed_urls).
            "enable_model_api": "true",
            "allowed_urls": "file://" + re.escape(str(Path(self.model_store).resolve())).replace("\\", "\\\\") + "/[^/]+\\\\.mar",
            "load_models": ",".join(f"{versions.MODEL_NAME}={v.mar}" for v in state.versions),
            "models": json.dumps({versions.MODEL_NAME: models}),
            "default_response_timeout": str(self.response_timeout_s),
            "job_queue_size": str(self.job_queue_size),
            "max_request_size": str(self.max_body_bytes),
            "max_response_size": str(self.max_body_bytes),
            # TorchServe's metrics plus the handler's own (gru_encoder/host/metrics.py), written by the launcher.
            "metrics_config": str(Path(self.log_dir).resolve() / METRICS_CONFIG),
            **({"vmargs": f"-javaagent:{Path(self.batch_fill_agent).resolve()}"} if self.batch_fill == "queued" else {}),
        }


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _parse(f: dataclasses.Field, raw: str) -> Any:
    if f.type in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r}: expected a whole number") from None
    return raw


def available_cpus(cgroup_root: str | Path = "/sys/fs/cgroup") -> float:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (a container's --cpus or a
    Kubernetes CPU limit) when one is set. os.cpu_count() sees the host's cores, not the quota."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(Path(cgroup_root))
    return min(cpus, quota) if quota else cpus


def cgroup_cpu_quota(root: Path) -> float | None:
    """The CPU quota in CPUs (cgroup v2 cpu.max, else v1 cfs_quota_us / cfs_period_us); None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "150000 100000"
        return None if quota == "max" else max(1.0, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # v1: -1 when unlimited
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else max(1.0, math.ceil(quota_us / period_us))
    except (OSError, ValueError):
        return None
