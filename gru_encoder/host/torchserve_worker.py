"""What the handler changes in TorchServe's Python worker once it has loaded, and why: two per-batch
costs of TorchServe 0.12's worker that are not the model's, measured at one connection and under load
(docs/PERFORMANCE.md, *Tuning history*). Both leave the worker's protocol and answers as they were.

- `quiet_batch_chatter`: the worker logs "Backend received inference at: <time>" at INFO on its root
  logger for every batch it reads (ts/protocol/otf_message_handler.py). The line goes to the worker's
  stdout, which the frontend reads and, as it matches none of its patterns, logs again: two processes'
  work a batch for a line nobody reads. Dropped by a logging filter; every other line stays.
- `buffer_protocol_reads`: the worker reads each frame of a batch with its own `recv` (a 4-byte length,
  then the field, for every header name and value, the request id, each input): about 30 system calls
  a request for a one-text request with 4 headers, more under load, where a batch carries 16 requests.
  The replacement keeps what one `recv` returned beyond the field asked for and serves the next fields
  from it, so a batch is read in one or a few `recv`s. The bytes and their order are TorchServe's.

Standard library only: the handler imports it inside a worker; TorchServe's modules are imported lazily.
"""

from __future__ import annotations

import logging
import socket
import sys

log = logging.getLogger(__name__)

BATCH_CHATTER = "Backend received inference at: %d"
PATCHED_VERSIONS = ("0.12.",)  # the worker protocol these functions were read from (ts/protocol/otf_message_handler.py)


def drop_batch_chatter(record: logging.LogRecord) -> bool:
    return record.msg != BATCH_CHATTER


def quiet_batch_chatter() -> None:
    """Drop the worker's per-batch "Backend received inference" line (a filter on its root logger, where
    TorchServe logs it; idempotent)."""
    root = logging.getLogger()
    if drop_batch_chatter not in root.filters:
        root.addFilter(drop_batch_chatter)


class BufferedReads:
    """TorchServe's `_retrieve_buffer(conn, length)` over a read-ahead buffer: the same bytes, in the same
    order, in a bytearray of exactly `length`, with TorchServe's exit when the frontend disconnects."""

    def __init__(self, chunk: int = 1 << 16):
        self.chunk = chunk
        self.conn: socket.socket | None = None
        self.buf = bytearray()
        self.pos = 0

    def __call__(self, conn: socket.socket, length: int) -> bytearray:
        if conn is not self.conn:  # a worker serves one connection; a new one starts with nothing read
            self.conn, self.buf, self.pos = conn, bytearray(), 0
        while len(self.buf) - self.pos < length:
            if self.pos:
                del self.buf[: self.pos]
                self.pos = 0
            pkt = conn.recv(max(self.chunk, length - len(self.buf)))
            if not pkt:
                logging.info("Frontend disconnected.")  # as TorchServe's own reader: the worker ends
                sys.exit(0)
            self.buf += pkt
        out = self.buf[self.pos : self.pos + length]
        self.pos += length
        return out


def in_torchserve_worker() -> bool:
    """True in the process TorchServe starts for a worker (it runs ts/model_service_worker.py as __main__)."""
    return str(getattr(sys.modules.get("__main__"), "__file__", "")).endswith("model_service_worker.py")


def buffer_protocol_reads() -> bool:
    """Replace the worker's frame reader with BufferedReads; False (and nothing changed) outside a
    TorchServe worker or on a TorchServe whose protocol module was not read for this."""
    if not in_torchserve_worker():
        return False
    try:
        from ts.protocol import otf_message_handler as otf
        from ts.version import __version__ as ts_version
    except ImportError:
        return False
    if not ts_version.startswith(PATCHED_VERSIONS) or not callable(getattr(otf, "_retrieve_buffer", None)):
        log.warning("TorchServe %s: its worker protocol reads are left as they are", ts_version)
        return False
    if not isinstance(otf._retrieve_buffer, BufferedReads):
        otf._retrieve_buffer = BufferedReads()
    return True
