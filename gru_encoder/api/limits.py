"""The per-request limits' defaults, defined once and standard library only: the request schema
(schema.Limits) validates with them, the serving settings start from them, and the client reads
max_texts from here when an older server does not say its own."""

from __future__ import annotations

DEFAULT_LIMITS: dict[str, int] = {
    "max_texts": 64,
    "max_text_chars": 10_000,
    "max_response_bytes": 6_553_500,  # TorchServe's max_response_size; the settings' max_body_bytes
    "max_request_chars": 131_072,
    "max_request_tokens": 8_192,
    "truncate_chars": 2_048,
}
