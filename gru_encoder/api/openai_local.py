"""The `openai` package against TorchServe without the gateway (`make serve`).

The package always sends `POST {base_url}/embeddings` and `GET {base_url}/models`; TorchServe routes only
`/predictions/{model}`. The gateway maps /v1/* itself; without it, give the package this HTTP client,
which sends those calls to /predictions/gru_encoder with the route header (gru_encoder/api/router.py):

    client = openai.OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="unused",
                           http_client=torchserve_http_client())
    client.embeddings.create(model="gru_encoder", input=["i am cold ."])

Needs the `openai` package (which brings its HTTP library, httpx2); imported by nothing else here.
"""

from __future__ import annotations

from typing import Any

from gru_encoder.api.contract import ROUTE_HEADER
from gru_encoder.api.routes import OPENAI, ROUTES

SUFFIXES = {route.path: route.handler for route in ROUTES if route.dialect == OPENAI}  # /v1/embeddings -> embeddings


def torchserve_http_client(model: str = "gru_encoder", **client_args: Any):
    """An httpx2.Client whose requests to .../v1/embeddings and .../v1/models go to /predictions/<model>."""
    import httpx2

    def to_predictions(request: "httpx2.Request") -> None:
        path = request.url.path.rstrip("/")
        for suffix, route in SUFFIXES.items():
            if path.endswith(suffix):
                request.url = request.url.copy_with(path=path[: -len(suffix)] + f"/predictions/{model}")
                request.method = "POST"  # TorchServe answers predictions on POST; GET /v1/models has no body
                request.headers[ROUTE_HEADER] = route
                return

    return httpx2.Client(event_hooks={"request": [to_predictions]}, **client_args)
