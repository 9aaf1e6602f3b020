"""Malformed and unusual HTTP requests sent over a raw socket (requests and curl refuse to send most of
them), and what the gateway must answer each: the status and the project's error type."""

from __future__ import annotations

import socket
from dataclasses import dataclass

PREDICT = "/predictions/gru_encoder"
JSON_BODY = b'{"texts": ["i am cold ."], "return": ["hidden"]}'


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes  # the whole request as sent; KEY in it is replaced by a valid API key
    status: int | None  # None: an HTTP/0.9 answer, which has no status line (the body is still JSON)
    type: str | None  # the error type, or None for a 200


def request(method: str, path: str, headers: list[str], body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    head = f"{method} {path} {version}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    return head.encode("latin-1") + body


def post(headers: list[str], body: bytes = JSON_BODY, path: str = PREDICT, version: str = "HTTP/1.1",
         length: bool = True, content_type: str = "application/json") -> bytes:
    base = ["Host: gateway", "Authorization: Bearer KEY", f"Content-Type: {content_type}"]
    return request("POST", path, base + headers + ([f"Content-Length: {len(body)}"] if length else []), body, version)


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


CASES = [
    # the good ones, so the table shows the socket path works
    Case("a good POST", post([]), 200, None),
    Case("a good chunked POST", post(["Transfer-Encoding: chunked"], chunked(JSON_BODY[:10], JSON_BODY[10:]), length=False), 200, None),
    # request lines and paths
    Case("path above the root", request("GET", "/../../etc/passwd", ["Host: gateway"]), 400, "bad_request"),
    Case("encoded path above the root", request("GET", "/%2e%2e/%2e%2e/etc/passwd", ["Host: gateway"]), 400, "bad_request"),
    Case("path without a slash", request("GET", "ping", ["Host: gateway"]), 400, "bad_request"),
    Case("NUL in the path", request("GET", "/ping%00", ["Host: gateway"]), 400, "bad_request"),
    Case("space in the path", b"GET /pi ng x HTTP/1.1\r\nHost: gateway\r\n\r\n", 400, "bad_request"),
    Case("lower-case method", request("get", "/ping", ["Host: gateway"]), 400, "bad_request"),
    Case("unknown method", request("BREW", "/ping", ["Host: gateway"]), 405, "method_not_allowed"),
    Case("TRACE", request("TRACE", PREDICT, ["Host: gateway"]), 405, "method_not_allowed"),
    Case("CONNECT", request("CONNECT", "gateway:443", ["Host: gateway"]), 400, "bad_request"),
    Case("query string with a key", post([], path=PREDICT + "?api_key=KEY"), 400, "bad_request"),
    Case("request line over 8 KB", request("GET", "/" + "a" * 9000, ["Host: gateway"]), 414, "header_too_large"),
    # HTTP versions
    Case("HTTP/2.0 request line", request("GET", "/ping", ["Host: gateway"], version="HTTP/2.0"), 505, "bad_request"),
    Case("HTTP/3.0 request line", post([], version="HTTP/3.0"), 505, "bad_request"),
    Case("HTTP/1.1 with junk", request("GET", "/ping", ["Host: gateway"], version="HTTP/1.1x"), 400, "bad_request"),
    Case("HTTP/0.9 GET", b"GET /nowhere\r\n", None, "not_found"),
    Case("HTTP/0.9 POST", b"POST " + PREDICT.encode() + b"\r\n", None, "bad_request"),
    # Host
    Case("no Host (HTTP/1.1)", request("GET", "/ping", []), 400, "bad_request"),
    Case("two Host headers", request("GET", "/ping", ["Host: gateway", "Host: other"]), 400, "bad_request"),
    Case("Host with a slash", request("GET", "/ping", ["Host: gate/way"]), 400, "bad_request"),
    Case("Host of dots", request("GET", "/ping", ["Host: .."]), 400, "bad_request"),
    # framing
    Case("Content-Length and Transfer-Encoding", post(["Transfer-Encoding: chunked"], chunked(JSON_BODY)), 400, "bad_request"),
    Case("two Content-Lengths", post([f"Content-Length: {len(JSON_BODY)}"]), 400, "bad_request"),
    Case("negative Content-Length", post(["Content-Length: -1"], length=False), 400, "bad_request"),
    Case("Content-Length not a number", post(["Content-Length: 12abc"], length=False), 400, "bad_request"),
    Case("Transfer-Encoding gzip", post(["Transfer-Encoding: gzip"], length=False), 501, "bad_request"),
    Case("bad chunk size", post(["Transfer-Encoding: chunked"], b"zz\r\n" + JSON_BODY + b"\r\n0\r\n\r\n", length=False), 400, "bad_request"),
    Case("chunk extension", post(["Transfer-Encoding: chunked"], b"%x;ext=1\r\n%s\r\n0\r\n\r\n" % (len(JSON_BODY), JSON_BODY), length=False), 200, None),
    Case("body over the limit (announced)", post(["Content-Length: 3000000"], b"", length=False), 413, "request_too_large"),
    # headers
    Case("two Authorization headers", post(["Authorization: Bearer KEY"]), 400, "bad_request"),
    Case("a header without a colon (ignored)", post(["NoColonHere"]), 200, None),
    Case("a folded header", post(["X-Folded: a", " b"]), 400, "bad_request"),
    Case("NUL in a header", post(["X-Nul: a\x00b"]), 400, "bad_request"),
    Case("a 9 KB header", post(["X-Big: " + "a" * 9000]), 431, "header_too_large"),
    Case("a 64 KiB header", post(["X-Big: " + "a" * 65536]), 431, "header_too_large"),
    Case("40 KB of 4 KB headers", post([f"X-Many-{i}: " + "a" * 4000 for i in range(10)]), 431, "header_too_large"),
    Case("Accept over 1,024 characters", post(["Accept: application/json;" + "q=1;" * 300]), 431, "header_too_large"),
    Case("a 4 KB cookie", post(["Cookie: c=" + "a" * 4000]), 200, None),
    # content types
    Case("no Content-Type (read as JSON)", request("POST", PREDICT, ["Host: gateway", "Authorization: Bearer KEY", f"Content-Length: {len(JSON_BODY)}"], JSON_BODY), 200, None),
    Case("text/plain", post([], content_type="text/plain"), 415, "unsupported_media_type"),
    Case("form body", request("POST", PREDICT, ["Host: gateway", "Authorization: Bearer KEY", "Content-Type: application/x-www-form-urlencoded", "Content-Length: 7"], b"texts=a"), 415, "unsupported_media_type"),
    Case("multipart body", request("POST", PREDICT, ["Host: gateway", "Authorization: Bearer KEY", "Content-Type: multipart/form-data; boundary=x", "Content-Length: 48"], b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n'), 415, "unsupported_media_type"),
    Case("multipart body to /ping", request("GET", "/ping", ["Host: gateway", "Content-Type: multipart/form-data; boundary=x", "Content-Length: 5"], b"--x--"), 415, "unsupported_media_type"),
    Case("JSON with a charset", post([], content_type="application/json; charset=utf-8"), 200, None),
]


@dataclass
class Reply:
    status: int | None  # None for an HTTP/0.9 answer (no status line)
    headers: dict[str, str]  # names in lower case
    body: bytes


def send(port: int, raw: bytes, timeout: float = 10.0) -> Reply:
    """Send raw bytes to 127.0.0.1:port and read one answer (Content-Length, chunked, or up to the close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
            reply = _parse(data)
            if reply is not None:
                return reply
    return _parse(data, closed=True) or Reply(None, {}, data)


def _parse(data: bytes, closed: bool = False) -> Reply | None:
    if not data.startswith(b"HTTP/"):
        return Reply(None, {}, data) if closed else None
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if "content-length" in headers:
        n = int(headers["content-length"])
        return Reply(status, headers, body[:n]) if len(body) >= n else None
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                return None
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return Reply(status, headers, out)
            if len(rest) < size + 2:
                return None
            out, rest = out + rest[:size], rest[size + 2:]
    return Reply(status, headers, body) if closed else None
