"""TorchServe handler for gru_encoder: thin by design; everything real lives in gru_encoder.api.service.

TorchServe requires exactly one class in this file. The archive ships the `gru_encoder` package at
its root, which TorchServe puts first on sys.path, so the handler and the tests run the same code.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from gru_encoder.api import info
from gru_encoder.host import torchserve_worker
from gru_encoder.core.artifacts import load_encoder
from gru_encoder.api.contract import JSON_TYPE, NPZ_TYPE, REQUEST_ID_HEADER, ROUTE_HEADER
from gru_encoder.host.metrics import PREDICTION_TIME, HandlerMetrics, TorchServeMetricsView, is_pinned
from gru_encoder.api.router import NATIVE_NAME, Router
from gru_encoder.api.routes import PINNED_HEADER
from gru_encoder.api.service import EncoderService, response_format
from gru_encoder.host import versions
from gru_encoder.host.settings import ServingSettings

log = logging.getLogger(__name__)


def request_header(context, idx: int, name: str) -> str | None:
    """A request header. TorchServe 0.12 hands each request's headers to the handler through the context
    (ts/protocol/otf_message_handler.py, ts/service.py), names not normalized to one case: look the name
    up case-insensitively (tests/integration/test_server.py sends both spellings)."""
    headers = context.get_all_request_header(idx) if hasattr(context, "get_all_request_header") else {}
    name = name.lower()
    return next((v for k, v in (headers or {}).items() if isinstance(k, str) and k.lower() == name), None)


def accept_header(context, idx: int) -> str | None:
    return request_header(context, idx, "accept")


class GruEncoderHandler:
    """initialize() loads the run folder shipped in the .mar; handle() answers one server batch."""

    def __init__(self) -> None:
        self.service: EncoderService | None = None

    def initialize(self, context) -> None:
        """Load and check the artifacts, pick the device and threads; any problem stops the worker loudly.

        The settings are the launcher's (GRU_ENCODER_SETTINGS, inherited from TorchServe's environment),
        so they change at deploy time without rebuilding the archive."""
        props = context.system_properties
        gpu_id = props.get("gpu_id")
        device = f"cuda:{gpu_id}" if gpu_id is not None and torch.cuda.is_available() else "cpu"
        settings = ServingSettings.from_env()
        if device == "cpu":
            # Workers share the CPUs this container may use: each takes its share instead of all of them.
            torch.set_num_threads(settings.threads_per_worker())
        loaded = load_encoder(props["model_dir"], map_location=device)
        limits = settings.limits()
        version = str(context.manifest.get("model", {}).get("modelVersion", "1.0"))
        self.service = EncoderService(loaded, limits, device, version)
        self.about = info.model_info(loaded.config, len(loaded.tokenizer), version, **settings.info())
        self.created = int(os.path.getmtime(os.path.join(props["model_dir"], "config.json")))
        self.settings, self.model_dir = settings, props["model_dir"]
        self.versions_seen: int | None = -1  # versions.json's mtime (None: no file) when the static bodies were made
        self.router = Router(self.service, {})
        self.refresh_static()
        self.metrics = HandlerMetrics(getattr(context, "metrics", None), self.about["name"], version=self.about["version"])
        if PREDICTION_TIME in self.metrics.metrics:
            context.metrics = TorchServeMetricsView(context.metrics, self.metrics)
        torchserve_worker.quiet_batch_chatter()  # per-batch costs of TorchServe's worker that are not the model's
        buffered = torchserve_worker.buffer_protocol_reads()
        log.info("gru_encoder loaded on %s (threads %d), limits %s, buffered protocol reads %s", device, torch.get_num_threads(),
                 limits, buffered)

    def refresh_static(self) -> None:
        """GET /info and GET /v1/models with the served versions, made again only when versions.json changed
        (one stat per batch that asks for either)."""
        path = versions.state_path(self.settings.model_store)
        try:
            seen: int | None = path.stat().st_mtime_ns
        except OSError:
            seen = None
        if seen == self.versions_seen:
            return
        own = versions.describe_run(Path(self.model_dir), self.about["version"], self.settings.mar, None)
        state = versions.State((own,), own.version, saved=False)  # no file: this version alone
        if seen is not None:
            try:
                state = versions.load(self.settings.model_store, self.settings.mar)
            except versions.VersionError as e:  # the launcher refuses such a file at start; say so, answer as this version
                log.warning("%s", e)
        served = versions.summary(state)
        about = info.with_versions(self.about, served)
        self.router.static = {"info": info.to_bytes(about), "models": info.to_bytes(info.models_list(about, self.created))}
        self.versions_seen = seen

    def handle(self, data: list[dict], context) -> list[bytes]:
        """One body per request (compact JSON, or .npz when its Accept header asks), with its own status;
        the route (native, OpenAI embeddings, info, models) from the ROUTE_HEADER each request carries."""
        bodies = [row.get("body", row.get("data")) if isinstance(row, dict) else row for row in data]
        idxs = range(len(bodies))
        formats = [response_format(accept_header(context, idx)) for idx in idxs]
        routes = [request_header(context, idx, ROUTE_HEADER) for idx in idxs]
        if any((value or "").strip().lower() in self.router.static for value in routes):  # not on the encoder's hot path
            self.refresh_static()
        replies = self.router.handle(bodies, routes, formats)
        for idx, reply in enumerate(replies):
            context.set_response_status(reply.status, "OK" if reply.status == 200 else "Error", idx)
            npz = reply.status == 200 and reply.route == NATIVE_NAME and formats[idx] == "npz"
            context.set_response_content_type(idx, NPZ_TYPE if npz else JSON_TYPE)
            # How many requests shared this forward pass: lets callers and the bench see batching.
            context.set_response_header(idx, "X-Server-Batch-Size", str(len(replies)))
            context.set_response_header(idx, "X-Model-Version", self.about["version"])  # the version that answered
            if reply.status != 200:
                # The gateway's X-Request-ID (the caller's, or one it made) ties this line to its answer.
                log.warning("request_id=%s route=%s status=%d error=%s", request_header(context, idx, REQUEST_ID_HEADER) or "-",
                            reply.route, reply.status, reply.error_type)
        self.metrics.record([r.route for r in replies], [r.status for r in replies], [r.error_type for r in replies],
                            self.router.stats, [is_pinned(request_header(context, idx, PINNED_HEADER)) for idx in idxs])
        return [reply.body for reply in replies]
