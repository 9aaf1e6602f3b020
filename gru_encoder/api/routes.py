"""The public HTTP surface, defined once: every route the gateway answers (in compose, Swarm and
Kubernetes, and in front of `make serve`), with its method, dialect, key, limits and OpenAPI operation.

Generated from this table (a test fails when a generated file drifts): the gateway's route maps,
locations and error pages (gateway_conf.py -> docker/gateway/*.conf), the OpenAPI document
(openapi.py -> docs/openapi.json), the client's paths and the OpenAI shim (client.py,
openai_local.py), and the tests' route lists. The handler dispatches on `handler`, the value of the
route header (contract.ROUTE_HEADER) that the gateway sets from the path. Adding a route is one entry
here plus its handler code. Standard library only: the client imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MODEL_NAME = "gru_encoder"
# A version's name (host/versions.py): also what the pinned route's path takes, so the gateway lets
# nothing else reach TorchServe's /predictions/gru_encoder/<version>.
VERSION_PATTERN = r"[0-9A-Za-z][0-9A-Za-z._-]{0,31}"
Dialect = Literal["native", "openai", "info", "health"]
NATIVE: Dialect = "native"  # the project's request and response, errors as contract.ErrorBody
OPENAI: Dialect = "openai"  # OpenAI's embeddings API, errors in OpenAI's shape (openai_api.py)
INFO: Dialect = "info"  # what the server runs, errors as contract.ErrorBody
HEALTH: Dialect = "health"  # liveness and readiness, no key
OPENAI_PREFIX = "/v1/"  # every path under it answers in OpenAI's error shape, unknown ones included
# The gateway's limits a route may take (zones in docker/gateway/nginx.conf.template):
Limit = Literal["key_rate", "key_inflight", "address_rate", "health_rate"]
KEYED: tuple[Limit, ...] = ("key_rate", "key_inflight")


@dataclass(frozen=True)
class Route:
    path: str
    methods: tuple[str, ...]  # what the gateway lets through; others get 405 with an Allow header
    dialect: Dialect
    handler: str | None  # the route header's value the handler answers it by ("" for the native route); None: not the handler
    key: bool  # an API key is required (wherever the gateway has keys)
    limits: tuple[Limit, ...]
    operation_id: str
    summary: str
    request: str | None = None  # the JSON body's schema (openapi.py's components)
    response: str | None = None  # the 200 JSON body's schema
    static: bool = False  # answered from a body the handler builds once at load (no encoder)
    upstream: Literal["handler", "ping", "probe"] = "handler"  # TorchServe's prediction route, its /ping, or a probe prediction
    params: tuple[tuple[str, str], ...] = ()  # the path's {name} parts and the regex each must match (nothing else passes)
    pin_by_model: bool = False  # the body's "model" may name a version (gru_encoder@2.0): the gateway routes to it

    @property
    def allow(self) -> str:
        """The Allow header of a 405."""
        return ", ".join(self.methods)

    @property
    def regex(self) -> str | None:
        """The path as an anchored regex, each {name} a capture of its pattern; None for a fixed path."""
        if not self.params:
            return None
        out = self.path
        for name, pattern in self.params:
            out = out.replace("{" + name + "}", f"({pattern})")
        return f"^{out}$"


ROUTES: tuple[Route, ...] = (
    Route(f"/predictions/{MODEL_NAME}", ("POST",), NATIVE, "", True, KEYED, "encode",
          "Encode texts: GRU output (B, T, D*H) and hidden (num_layers*D, B, H)", "EncodeRequest", "EncodeResponse"),
    Route(f"/predictions/{MODEL_NAME}/{{version}}", ("POST",), NATIVE, "", True, KEYED, "encodeVersion",
          "Encode texts with one served version of the model (GET /info lists them): the answer of the version that built "
          "your stored vectors", "EncodeRequest", "EncodeResponse", params=(("version", VERSION_PATTERN),)),
    Route("/v1/embeddings", ("POST",), OPENAI, "embeddings", True, KEYED, "createEmbeddings",
          "OpenAI-compatible embeddings: each text's final hidden state, hidden[-1]; model gru_encoder@<version> pins a served "
          "version (GET /v1/models lists the ids)", "EmbeddingsRequest", "EmbeddingsResponse", pin_by_model=True),
    Route("/v1/models", ("GET",), OPENAI, "models", True, KEYED, "listModels",
          "OpenAI-compatible model list: the served model", response="ModelList", static=True),
    Route("/info", ("GET",), INFO, "info", True, KEYED, "info",
          "The served model, its shapes, the request limits and the batching", response="Info", static=True),
    Route("/ping", ("GET", "HEAD"), HEALTH, None, False, ("address_rate",), "ping",
          "TorchServe's liveness (stays healthy while a worker crash-loops; /health is readiness)",
          response="Ping", upstream="ping"),
    Route("/health", ("GET", "HEAD"), HEALTH, None, False, ("health_rate",), "health",
          "Readiness: the gateway runs a real prediction and answers 200 only when the model answered",
          response="Health", upstream="probe"),
)
BY_PATH: dict[str, Route] = {route.path: route for route in ROUTES}
HANDLER_ROUTES: dict[str, Route] = {route.handler: route for route in ROUTES if route.handler is not None and not route.params}
NATIVE_PATH = f"/predictions/{MODEL_NAME}"
MODEL_HEADER = "X-Gru-Encoder-Model"  # the version that answers, chosen by the gateway's edge (path, body's model, release)
CALLER_HEADER = "X-Caller-ID"  # who a caller is for a canary's sticky split where the gateway has no API keys
CALLER_ID_PATTERN = r"[A-Za-z0-9._:-]{1,128}"  # docker/gateway/nginx.conf.template's $gw_caller map takes these only
PINNED_HEADER = "X-Gru-Encoder-Pinned"  # "1" when the caller chose that version (path or body), set by the gateway's edge
PINNED_PATH = f"/predictions/{MODEL_NAME}/{{version}}"
assert BY_PATH[PINNED_PATH].dialect == NATIVE, "a pinned request is a native one"
assert BY_PATH[NATIVE_PATH].handler == "", "the native route is the handler's default"


def path_of(operation_id: str, routes: tuple[Route, ...] = ROUTES) -> str:
    """A route's path by its operation id (the client's and the tools' way to name a route)."""
    return next(route.path for route in routes if route.operation_id == operation_id)
