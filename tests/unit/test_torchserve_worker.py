"""The handler's changes to TorchServe's Python worker (gru_encoder/host/torchserve_worker.py), against
TorchServe's own protocol reader: the same messages, parsed the same, whatever the socket's chunking."""

from __future__ import annotations

import logging
import random
import socket
import struct
import threading

import pytest

from gru_encoder.host import torchserve_worker
from gru_encoder.host.torchserve_worker import BufferedReads

otf = pytest.importorskip("ts.protocol.otf_message_handler")


def frame(data: bytes) -> bytes:
    return struct.pack("!i", len(data)) + data


def predict_message(requests: list[tuple[str, dict[str, str], bytes]]) -> bytes:
    """A batch as TorchServe's frontend frames it (ts/protocol/otf_message_handler.py reads it):
    'I', then per request its id, headers and one "body" input, each list ended by -1."""
    out = b"I"
    for request_id, headers, body in requests:
        out += frame(request_id.encode())
        for name, value in headers.items():
            out += frame(name.encode()) + frame(value.encode())
        out += struct.pack("!i", -1)
        out += frame(b"body") + frame(b"application/json") + frame(body)
        out += struct.pack("!i", -1)
    return out + struct.pack("!i", -1)


def batches(rng: random.Random, n: int) -> list[bytes]:
    out = []
    for b in range(n):
        size = rng.choice([1, 1, 3, 16])
        out.append(predict_message([
            (f"req-{b}-{i}", {"Content-Type": "application/json", "Host": "127.0.0.1:8080", "X-Empty": ""},
             b'{"texts": ["' + ("word " * rng.randrange(0, 30000 if i == 0 else 40)).encode() + b'"]}')
            for i in range(size)]))
    return out


def read_all(reader, messages: list[bytes], chunking: random.Random | None) -> list:
    """Send the messages through a socketpair (in random pieces when `chunking`), read them back with
    TorchServe's retrieve_msg over `reader`."""
    a, b = socket.socketpair()
    data = b"".join(messages)

    def send() -> None:
        pos = 0
        while pos < len(data):
            n = chunking.randrange(1, 5000) if chunking else len(data)
            a.sendall(data[pos:pos + n])
            pos += n

    sender = threading.Thread(target=send)
    sender.start()
    old = otf._retrieve_buffer
    otf._retrieve_buffer = reader
    try:
        got = [otf.retrieve_msg(b) for _ in messages]
    finally:
        otf._retrieve_buffer = old
        sender.join()
        a.close()
        b.close()
    return got


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decode", ["true", "false"])  # config.properties serves with decode_input_request=false
def test_buffered_reads_parse_what_torchserves_reader_parses(seed: int, decode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS_DECODE_INPUT_REQUEST", decode)
    messages = batches(random.Random(seed), 12)
    expected = read_all(otf._retrieve_buffer, messages, random.Random(seed))  # TorchServe's own reader
    assert len(expected) == 12 and all(cmd == b"I" for cmd, _ in expected)
    assert sum(len(batch) for _, batch in expected) > 12
    for chunking in (None, random.Random(seed + 10)):
        got = read_all(BufferedReads(chunk=4096 if chunking else 1 << 16), messages, chunking)
        assert got == expected
        values = [v for _, batch in got for r in batch for v in (r["requestId"], r["parameters"][0]["value"])]
        assert all(type(v) is (bytearray if decode == "false" else type(v)) for v in values)
        assert type(got[0][1][0]["requestId"]) is bytearray


def test_buffered_reads_take_few_system_calls() -> None:
    class CountingSocket:
        def __init__(self, sock: socket.socket):
            self.sock, self.calls = sock, 0

        def recv(self, n: int) -> bytes:
            self.calls += 1
            return self.sock.recv(n)

    a, b = socket.socketpair()
    message = predict_message([(f"r{i}", {"Content-Type": "application/json", "Accept": "*/*"}, b'{"texts": ["hi"]}')
                               for i in range(16)])
    a.sendall(message)
    counting = CountingSocket(b)
    old = otf._retrieve_buffer
    try:
        otf._retrieve_buffer = BufferedReads()
        cmd, batch = otf.retrieve_msg(counting)
    finally:
        otf._retrieve_buffer = old
        a.close()
        b.close()
    assert cmd == b"I" and len(batch) == 16
    assert counting.calls <= 2, counting.calls  # TorchServe's reader: 2 per field, over 300 for this batch


def test_a_disconnected_frontend_ends_the_worker_as_before() -> None:
    a, b = socket.socketpair()
    a.sendall(b"I" + struct.pack("!i", 5) + b"ab")
    a.close()
    reader = BufferedReads()
    assert reader(b, 1) == bytearray(b"I")
    with pytest.raises(SystemExit) as e:
        reader(b, 4 + 5)
    assert e.value.code == 0
    b.close()


def test_outside_a_worker_nothing_is_changed() -> None:
    before = otf._retrieve_buffer
    assert torchserve_worker.buffer_protocol_reads() is False and otf._retrieve_buffer is before


def test_only_the_batch_chatter_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    torchserve_worker.quiet_batch_chatter()
    torchserve_worker.quiet_batch_chatter()  # idempotent
    try:
        assert logging.getLogger().filters.count(torchserve_worker.drop_batch_chatter) == 1
        with caplog.at_level(logging.INFO):
            logging.info(torchserve_worker.BATCH_CHATTER, 1796128429)  # as ts/protocol/otf_message_handler.py logs it
            logging.info("Backend received something else")
            logging.getLogger("ts.model_loader").info(torchserve_worker.BATCH_CHATTER, 1)  # another logger: not TorchServe's line
        assert [r.getMessage() for r in caplog.records] == ["Backend received something else", "Backend received inference at: 1"]
    finally:
        logging.getLogger().removeFilter(torchserve_worker.drop_batch_chatter)
