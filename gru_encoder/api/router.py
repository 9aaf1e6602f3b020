"""One server batch, answered per route: the native encoder, OpenAI's embeddings, /info, /v1/models.

TorchServe routes only POST /predictions/{model}, so the route travels in a request header,
ROUTE_HEADER: absent or empty is the native route; `embeddings`, `info` and `models` are the others.
The gateway sets it from the path (/v1/embeddings, /info, /v1/models), overwriting whatever a caller
sent; without the gateway a caller sends it to /predictions/gru_encoder itself (docs/API.md).

Every request of the batch that needs the encoder (native and embeddings alike) goes through the same
EncoderService.handle call, so both dialects share one packed forward pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gru_encoder.api import openai_api
from gru_encoder.api.contract import ROUTE_HEADER, ErrorBody, RequestError
from gru_encoder.api.stats import BatchStats
from gru_encoder.api.service import EncoderService

log = logging.getLogger(__name__)

NATIVE = "predictions"
ROUTES = (NATIVE, openai_api.ROUTE, "info", "models")


def route_of(value: str | None) -> str:
    """The route named by the header's value; RequestError for an unknown one."""
    value = (value or "").strip().lower()
    if not value:
        return NATIVE
    if value in ROUTES[1:]:
        return value
    raise RequestError("validation_error", f"{ROUTE_HEADER}: {value!r} is not a route; use one of "
                       f"{', '.join(ROUTES[1:])}, or leave it out for the native route", ROUTE_HEADER)


@dataclass
class Reply:
    route: str
    status: int
    body: bytes
    error_type: str | None = None  # contract.ERRORS' type of an error answer


class Router:
    """Answers a server batch given each request's body, route header value and response format."""

    def __init__(self, service: EncoderService, info: bytes, models: bytes):
        self.service = service
        self.static = {"info": info, "models": models}
        cfg = service.encoder.config
        self.directions = cfg.num_directions
        self.embedding_size = cfg.num_directions * cfg.hidden_size
        self.stats = BatchStats()  # of the last batch, for the handler's metrics

    def handle(self, bodies: list[Any], route_values: list[str | None], formats: list[str]) -> list[Reply]:
        replies: list[Reply | None] = [None] * len(bodies)
        encode_idx: list[int] = []  # requests that go to the encoder, in order
        encode_bodies: list[Any] = []
        encode_formats: list[Any] = []
        routes: list[str] = []
        for i, (body, value) in enumerate(zip(bodies, route_values)):
            try:
                route = route_of(value)
            except RequestError as e:
                routes.append(NATIVE)
                replies[i] = Reply(NATIVE, e.error.code, e.error.to_json(), e.error.type)
                continue
            routes.append(route)
            if route in self.static:
                replies[i] = Reply(route, 200, self.static[route])
            elif route == openai_api.ROUTE:
                name = self.service.model_info["name"]
                try:
                    request = openai_api.parse_embeddings_request(body, name, self.embedding_size)
                except RequestError as e:
                    replies[i] = Reply(route, e.error.code, openai_api.openai_error(e.error), e.error.type)
                    continue
                encode_idx.append(i)
                encode_bodies.append(openai_api.native_body(request))
                encode_formats.append(openai_api.response_writer(request, name, self.directions))
            else:
                encode_idx.append(i)
                encode_bodies.append(body)
                encode_formats.append(formats[i])
        self.stats = BatchStats(texts=[0] * len(bodies), tokens=[0] * len(bodies))
        if encode_idx:
            answers = self.service.handle(encode_bodies, encode_formats)
            done = self.service.stats  # indexed like encode_bodies: moved to the batch's positions
            self.stats.seconds = done.seconds
            for j, i in enumerate(encode_idx):
                self.stats.texts[i], self.stats.tokens[i] = done.texts[j], done.tokens[j]
            for i, (status, body) in zip(encode_idx, answers):
                error = ErrorBody.parse(body) if status != 200 else None
                if error is not None and routes[i] == openai_api.ROUTE:
                    body = openai_api.openai_error(error)
                replies[i] = Reply(routes[i], status, body, error.type if error else None)
        return replies  # type: ignore[return-value]
