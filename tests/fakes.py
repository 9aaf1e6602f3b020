"""A fake TorchServe context for in-process handler tests (the parts of ts.context.Context the handler uses)."""

from __future__ import annotations

from pathlib import Path


class FakeContext:
    """The parts of ts.context.Context the handler uses, recording what it sets per request."""

    def __init__(self, model_dir: Path, request_headers: list[dict[str, str]] | None = None, metrics=None):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 8}
        self.manifest = {"model": {"modelName": "gru_encoder", "modelVersion": "1.0"}}
        self.status: dict[int, int] = {}
        self.content_type: dict[int, str] = {}
        self.headers: dict[int, dict[str, str]] = {}
        self.request_headers = request_headers or []  # per request, names as the client sent them
        self.metrics = metrics  # TorchServe's metrics cache (ts.metrics.metric_cache_yaml_impl), or None

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.request_headers[idx] if idx < len(self.request_headers) else {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status[idx] = code

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type[idx] = value

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.headers.setdefault(idx, {})[key] = value
