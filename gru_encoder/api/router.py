"""One server batch, answered per route: the native encoder, OpenAI's embeddings, /info, /v1/models.

TorchServe routes only POST /predictions/{model}, so the route travels in a request header,
ROUTE_HEADER, whose values the route table defines (routes.py: each route's `handler`): absent or empty
is the native route. The gateway sets it from the path, overwriting whatever a caller sent.

Each request is parsed once, by its dialect, into a native EncodeRequest or an ErrorBody; every request
that needs the encoder (native and embeddings alike) goes through one EncoderService.run call, so both
dialects share one packed forward pass; each answer is then rendered once, in its dialect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from gru_encoder.api import openai_api
from gru_encoder.api.contract import ROUTE_HEADER, Encoded, ErrorBody, RequestError
from gru_encoder.api.routes import HANDLER_ROUTES, OPENAI
from gru_encoder.api.service import NATIVE_WRITERS, EncoderService, parse_body
from gru_encoder.api.stats import BatchStats

log = logging.getLogger(__name__)

NATIVE_NAME = "predictions"  # the native route's name in metrics and logs (its header value is empty)


def route_of(value: str | None) -> str:
    """The handler route named by the header's value ("" for the native one); RequestError for an unknown one."""
    value = (value or "").strip().lower()
    if value in HANDLER_ROUTES:
        return value
    others = ", ".join(name for name in HANDLER_ROUTES if name)
    raise RequestError("validation_error", f"{ROUTE_HEADER}: {value[:32]!r} is not a route; use one of {others}, "
                       "or leave it out for the native route", ROUTE_HEADER)


@dataclass
class Reply:
    route: str  # the route's name in metrics and logs
    status: int
    body: bytes
    error_type: str | None = None  # contract.ERRORS' type of an error answer


class Router:
    """Answers a server batch given each request's body, route header value and response format."""

    def __init__(self, service: EncoderService, static: dict[str, bytes]):
        """static: the body of each route answered without the encoder (routes.py's `static` routes), by handler name."""
        self.service = service
        self.static = static
        cfg = service.encoder.config
        self.directions = cfg.num_directions
        self.embedding_size = cfg.num_directions * cfg.hidden_size
        self.stats = BatchStats()  # of the last batch, for the handler's metrics

    def parse(self, route: str, body: Any, fmt: str) -> tuple[Any, Callable[[ErrorBody], bytes], Callable[[Encoded], bytes]]:
        """(native request or ErrorBody, error writer, 200 writer) of one request in its route's dialect."""
        if HANDLER_ROUTES[route].dialect == OPENAI:
            name = self.service.model_info["name"]
            try:
                request = openai_api.parse_embeddings_request(body, name, self.embedding_size, self.service.model_info["version"])
                native = openai_api.encode_request(request, self.service.limits)
            except RequestError as e:
                return e.error, openai_api.openai_error, None  # type: ignore[return-value]
            answered_as = request.model if request.model.startswith(name + "@") else name  # the id the caller pinned
            return native, openai_api.openai_error, openai_api.response_writer(request, answered_as, self.directions)
        try:
            native = parse_body(body, self.service.limits)
        except RequestError as e:
            native = e.error
        return native, ErrorBody.to_json, NATIVE_WRITERS[fmt]

    def handle(self, bodies: list[Any], route_values: list[str | None], formats: list[str]) -> list[Reply]:
        replies: list[Reply | None] = [None] * len(bodies)
        pending: list[tuple[int, str, Any, Callable, Callable]] = []  # requests for the encoder, in order
        for i, (body, value) in enumerate(zip(bodies, route_values)):
            try:
                route = route_of(value)
            except RequestError as e:
                replies[i] = Reply(NATIVE_NAME, e.error.code, e.error.to_json(), e.error.type)
                continue
            name = route or NATIVE_NAME
            if route in self.static:
                replies[i] = Reply(name, 200, self.static[route])
                continue
            request, write_error, write = self.parse(route, body, formats[i])
            pending.append((i, name, request, write_error, write))
        self.stats = BatchStats(texts=[0] * len(bodies), tokens=[0] * len(bodies))
        if pending:
            answers = self.service.run([p[2] for p in pending])
            for j, ((i, name, _, write_error, write), answer) in enumerate(zip(pending, answers)):
                body = self.service.render(answer, write)  # the request's own error, or one render() made
                replies[i] = Reply(name, 200, body) if isinstance(body, bytes) else \
                    Reply(name, body.code, write_error(body), body.type)
                self.stats.texts[i], self.stats.tokens[i] = self.service.stats.texts[j], self.service.stats.tokens[j]
            self.stats.seconds = self.service.stats.seconds
        return replies  # type: ignore[return-value]
