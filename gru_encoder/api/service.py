"""The encode path behind the REST endpoint, independent of TorchServe (the handler only adapts it).

A server batch of several requests is validated request by request (a bad one gets its own 4xx and
never fails the others), then all valid texts go through ONE packed forward pass and are split back.
Packing keeps every text's computation its own (no padding enters it); what batching can change is
only the float rounding of the matrix products (different batch sizes take different kernels): a
text's tensors equal its solo answer within 1e-5, the bound the tests assert (the largest difference
measured was 3.8e-6, shipped model, one torch thread), not bit for bit; the same batch composition
gives the same bits every time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import orjson
import torch
from pydantic import ValidationError

from gru_encoder.core.artifacts import LoadedEncoder
from gru_encoder.api.contract import JSON_TYPE, NPZ_TYPE, Encoded, ErrorBody, RequestError, quote
from gru_encoder.api.stats import BatchStats
from gru_encoder.core.model import pad_batch
from gru_encoder.api.schema import EncodeRequest, Limits, request_model
from gru_encoder.core.tokenizer import Encoding, InputTooLongError, NormalizedTooLongError

log = logging.getLogger(__name__)
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY  # float32 arrays print as shortest round-trip decimals
FORMATS = ("json", "npz")
Writer = Callable[[Encoded], bytes]  # a dialect's 200 body: NATIVE_WRITERS, openai_api.response_writer
__all__ = ["EncoderService", "JSON_TYPE", "NPZ_TYPE", "parse_body", "response_format"]


def response_format(accept: str | None) -> str:
    """"npz" when the Accept header lists application/x-npz (with q > 0), else "json" (also for */* or none)."""
    for media_range in (accept or "").split(","):
        media, *params = (part.strip() for part in media_range.split(";"))
        if media.lower() == NPZ_TYPE:
            q = next((p.partition("=")[2] for p in params if p.replace(" ", "").lower().startswith("q=")), "1")
            try:
                return "npz" if float(q) > 0 else "json"
            except ValueError:
                return "npz"
    return "json"


@dataclass
class Prepared:
    """One valid request, tokenized."""

    request: EncodeRequest
    encodings: list[Encoding]
    h0: torch.Tensor | None  # (L*D, B, H)


def _field_path(loc: tuple) -> str:
    """pydantic's loc as the field it names: texts[3], h0[0][1]; a name from the body is cut by quote."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = quote(part, bare=True)
            path += f".{name}" if path else name
    return path or "body"


def _is_unicode(text: str) -> bool:
    """False for a str holding lone surrogates: Python's json decodes "\\ud800" into one, and it can
    be neither tokenized meaningfully nor written back as JSON (orjson refuses it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _limit_error(err: dict, limits: Limits) -> RequestError | None:
    """pydantic's too_long errors on `texts` are the request limits: a 413 naming the limit, not a 422."""
    loc = err["loc"]
    if err["type"] == "too_long" and loc == ("texts",):
        n = err.get("input")
        count = f"{len(n)} texts" if isinstance(n, list) else "too many texts"
        return RequestError("too_many_texts", f"{count}, more than the limit of {limits.max_texts}; split the request", "texts")
    if err["type"] == "string_too_long" and len(loc) == 2 and loc[0] == "texts":
        i, n = loc[1], len(err.get("input") or "")
        return RequestError("input_too_long", f"texts[{i}] has {n} characters, more than the limit of {limits.max_text_chars}", f"texts[{i}]")
    return None


def parse_body(body: Any, limits: Limits = Limits()) -> EncodeRequest:
    """Raw body (bytes/str, or JSON TorchServe already decoded) -> a validated request, or RequestError.

    None is what the handler gets for a form or multipart body: TorchServe's frontend splits those into
    named fields and there is no body left to read.
    """
    if body is None:
        raise RequestError(
            "unsupported_media_type",
            'the body arrived as form fields; send JSON like {"texts": ["i am cold ."]} with Content-Type: application/json',
        )
    if isinstance(body, (bytes, bytearray, str)):
        if not body:
            raise RequestError("invalid_json", 'request body is empty; send JSON like {"texts": ["i am cold ."]}')
        try:
            body = orjson.loads(body)  # orjson checks UTF-8 itself: no decode on the happy path
        except orjson.JSONDecodeError as e:
            if isinstance(body, (bytes, bytearray)):
                try:
                    bytes(body).decode("utf-8")
                except UnicodeDecodeError as u:  # name the byte, which orjson's message does not
                    raise RequestError("invalid_json", f"request body is not valid UTF-8 ({u.reason} at byte {u.start})")
            raise RequestError("invalid_json", f"request body is not valid JSON: {e}")
    if not isinstance(body, dict):
        raise RequestError(
            "validation_error", f'request body must be a JSON object with a "texts" field, got {type(body).__name__}', "body"
        )
    try:
        return request_model(limits).model_validate(body)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        for err in errors:
            limit = _limit_error(err, limits)
            if limit is not None:
                raise limit
        shown = "; ".join(f"{_field_path(err['loc'])}: {err['msg']}" for err in errors[:3])
        more = f" (and {len(errors) - 3} more errors)" if len(errors) > 3 else ""
        raise RequestError("validation_error", shown + more, _field_path(errors[0]["loc"]))


class EncoderService:
    """Validates, encodes and serializes requests for one loaded encoder on one device."""

    def __init__(self, loaded: LoadedEncoder, limits: Limits = Limits(), device: str | torch.device = "cpu", version: str = "1.0"):
        self.encoder = loaded.encoder.to(device).eval()
        self.tokenizer = loaded.tokenizer
        self.limits = limits
        self.device = torch.device(device)
        cfg = self.encoder.config
        self.state_shape = (cfg.num_layers * cfg.num_directions, cfg.hidden_size)  # h0 is (L*D, B, H)
        self.model_info = {
            "name": loaded.config["model_name"],
            "version": version,
            "weights_sha256": loaded.config["files"]["weights"]["sha256"],
        }
        self.stats = BatchStats()  # the last handle()'s counts and stage times, for the handler's metrics

    def prepare(self, request: EncodeRequest) -> Prepared:
        """Tokenize and check h0 (the schema applied the limits); raises RequestError naming the field.

        The request's work budget is spent text by text and checked before each costly step: a text is
        normalized only up to what is left of max_request_chars (NFKC can make it 18 times longer, and
        the later steps cost in proportion), and with truncate it is first cut to truncate_chars."""
        texts, limits = request.texts, self.limits
        cut_chars = limits.truncate_chars if request.truncate else None
        encodings: list[Encoding] = []
        chars = tokens = 0
        for i, text in enumerate(texts):
            if not _is_unicode(text):
                raise RequestError("validation_error", f"texts[{i}] holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text", f"texts[{i}]")
            try:
                enc = self.tokenizer.encode(text, truncate=request.truncate, add_eos=request.add_eos,
                                            max_chars=limits.max_request_chars - chars, cut_chars=cut_chars)
            except InputTooLongError as e:
                raise RequestError("input_too_long", f"texts[{i}]: {e} (\"truncate\": true)", f"texts[{i}]")
            except NormalizedTooLongError as e:
                raise RequestError(
                    "request_too_long",
                    f"texts[{i}] comes to {e.n_chars} characters after Unicode normalization (NFKC), and the texts before it to "
                    f"{chars}: more than the limit of {limits.max_request_chars} for a request (max_request_chars); "
                    "send fewer or shorter texts per request", f"texts[{i}]")
            if enc.n_words == 0:  # blank, or only characters the tokenizer drops (controls, spaces)
                where = f" in its first {cut_chars} characters (truncate cuts there)" if len(text) > (cut_chars or len(text)) else ""
                raise RequestError("validation_error", f"texts[{i}] has no tokens{where} (empty, whitespace or control characters only)", f"texts[{i}]")
            chars += enc.n_chars
            tokens += len(enc.ids)
            if tokens > limits.max_request_tokens:
                raise RequestError(
                    "request_too_long",
                    f"texts[0..{i}] hold {tokens} tokens: more than the limit of {limits.max_request_tokens} for a request "
                    "(max_request_tokens); send fewer texts per request", f"texts[{i}]")
            encodings.append(enc)
        h0 = None
        if request.h0 is not None:
            want = (self.state_shape[0], len(texts), self.state_shape[1])
            try:
                h0 = torch.tensor(request.h0, dtype=torch.float32)
            except ValueError:
                raise RequestError("validation_error", f"h0 must be a rectangular array of shape {list(want)}", "h0")
            if tuple(h0.shape) != want:
                raise RequestError(
                    "validation_error",
                    f"h0 has shape {list(h0.shape)}, expected (num_layers*D, B, H) = {list(want)} for {len(texts)} texts", "h0",
                )
        return Prepared(request, encodings, h0)

    @torch.inference_mode()
    def encode(self, batch: list[Prepared]) -> list[Encoded]:
        """All requests' texts in one packed forward pass; one answer per request."""
        seqs = [enc.ids for p in batch for enc in p.encodings]
        ids, lengths = pad_batch(seqs)  # (N, T_max), (N,)
        h0 = None
        if any(p.h0 is not None for p in batch):
            # Requests without h0 start from zeros, which is nn.GRU's own default.
            h0 = torch.cat(
                [p.h0 if p.h0 is not None else torch.zeros(self.state_shape[0], len(p.encodings), self.state_shape[1]) for p in batch],
                dim=1,
            ).to(self.device)  # (L*D, N, H)
        output, hidden = self.encoder(ids.to(self.device), lengths, h0)  # (N, T_max, D*H), (L*D, N, H)
        output, hidden = output.cpu().numpy(), hidden.cpu().numpy()
        ids_np, lengths_np = ids.numpy(), lengths.numpy()

        results, start = [], 0
        for p in batch:
            stop = start + len(p.encodings)
            t = int(lengths_np[start:stop].max())  # this request's own T
            wanted = set(p.request.return_)
            results.append(Encoded(
                model=self.model_info,
                tokens=[enc.tokens for enc in p.encodings],
                ids=np.ascontiguousarray(ids_np[start:stop, :t]),
                lengths=lengths_np[start:stop],
                truncated=[enc.truncated for enc in p.encodings],
                output=np.ascontiguousarray(output[start:stop, :t]) if "output" in wanted else None,
                hidden=np.ascontiguousarray(hidden[:, start:stop]) if "hidden" in wanted else None,
            ))
            start = stop
        return results

    def check_response_size(self, prepared: Prepared) -> None:
        """413 response_too_large before the forward pass when the answer cannot fit max_response_bytes
        whatever its values: each float32 takes 4 bytes in .npz and at least 4 in JSON (3 characters,
        as in "0.0" or "1.0", and a separator), so B*T*D*H output floats need at least 4 bytes each."""
        b, t = len(prepared.encodings), max(len(enc.ids) for enc in prepared.encodings)
        layers_dirs, hidden = self.state_shape
        floats = 0
        if "output" in prepared.request.return_:
            floats += b * t * hidden * self.encoder.config.num_directions  # (B, T, D*H)
        if "hidden" in prepared.request.return_:
            floats += layers_dirs * b * hidden  # (L*D, B, H)
        if 4 * floats > self.limits.max_response_bytes:
            raise RequestError(
                "response_too_large",
                f"response would hold {floats} floats, at least {4 * floats} bytes, more than the limit of "
                f'{self.limits.max_response_bytes}; send fewer or shorter texts, or ask for "return": ["hidden"]', "texts",
            )

    def run(self, requests: Sequence[EncodeRequest | ErrorBody]) -> list[Encoded | ErrorBody]:
        """One answer per validated request (an ErrorBody passed in stays that request's answer): every
        valid request is tokenized and checked against the limits, then all their texts go through one
        packed forward pass. One bad request never fails the others. self.stats holds the batch's texts,
        tokens and stage times afterwards (serializing is the dialects' and is added by render())."""
        self.stats = stats = BatchStats(texts=[0] * len(requests), tokens=[0] * len(requests))
        t0 = time.perf_counter()
        answers: list[Encoded | ErrorBody | None] = [None] * len(requests)
        valid: list[tuple[int, Prepared]] = []
        for i, request in enumerate(requests):
            if isinstance(request, ErrorBody):
                answers[i] = request
                continue
            try:
                prepared = self.prepare(request)
                self.check_response_size(prepared)
                valid.append((i, prepared))
            except RequestError as e:
                answers[i] = e.error
        t1 = time.perf_counter()
        stats.seconds["tokenize"] += t1 - t0
        for i, p in valid:
            stats.texts[i], stats.tokens[i] = len(p.encodings), sum(len(enc.ids) for enc in p.encodings)
        if valid:
            try:
                results = self.encode([p for _, p in valid])
            except Exception:  # a bug, not the client's fault: answer 500 per request, keep the worker
                log.exception("encode failed for %d requests", len(valid))
                results = [RequestError("internal_error", "the encoder failed on this request; it has been logged").error] * len(valid)
            stats.seconds["forward"] += time.perf_counter() - t1
            for (i, _), result in zip(valid, results):
                answers[i] = result
        return answers  # type: ignore[return-value]

    def render(self, answer: Encoded | ErrorBody, write: Writer) -> bytes | ErrorBody:
        """A 200 body of one answer in a dialect (`write` turns an Encoded into it), or the answer's error:
        its own, a 413 response_too_large for a body over max_response_bytes (TorchServe would cut the
        connection), or a 500 for a failing writer. The dialect writes the error in its own shape."""
        if isinstance(answer, ErrorBody):
            return answer
        t0 = time.perf_counter()
        try:
            body = write(answer)
        except Exception:  # a bug: this request gets a 500, the others in the batch their answers
            log.exception("serializing a response failed")
            return RequestError("internal_error", "the response could not be written; it has been logged").error
        finally:
            self.stats.seconds["serialize"] += time.perf_counter() - t0
        if len(body) > self.limits.max_response_bytes:
            return RequestError(
                "response_too_large",
                f"response would be {len(body)} bytes, more than the limit of {self.limits.max_response_bytes}; "
                'send fewer or shorter texts, or ask for "return": ["hidden"]', "texts").error
        return body

    def handle(self, bodies: list[Any], formats: list[str] | None = None) -> list[tuple[int, bytes]]:
        """The native route end to end: (HTTP status, body) per raw request body, each answer JSON or
        .npz as `formats` says ("json"/"npz", see response_format); errors are always JSON."""
        formats = formats or ["json"] * len(bodies)
        t0 = time.perf_counter()
        requests: list[EncodeRequest | ErrorBody] = []
        for body in bodies:
            try:
                requests.append(parse_body(body, self.limits))
            except RequestError as e:
                requests.append(e.error)
        parsed = time.perf_counter() - t0
        answers = self.run(requests)
        self.stats.seconds["tokenize"] += parsed
        replies = []
        for answer, fmt in zip(answers, formats):
            body = self.render(answer, NATIVE_WRITERS[fmt])
            replies.append((200, body) if isinstance(body, bytes) else (body.code, body.to_json()))
        return replies


def write_json(result: Encoded) -> bytes:
    """The native JSON body: compact, float32 as shortest round-trip decimals."""
    return orjson.dumps(result.to_json_dict(), option=JSON_OPTIONS)


NATIVE_WRITERS: dict[str, Writer] = {"json": write_json, "npz": Encoded.to_npz}
