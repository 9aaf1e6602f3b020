"""The handler in-process with a fake TorchServe context: contract, batching, errors (no server)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from gru_encoder.core.artifacts import load_encoder
from gru_encoder.core.model import pad_batch
from gru_encoder.api.service import response_format
from handlers.encoder_handler import GruEncoderHandler
from tests.fakes import FakeContext

TEXTS = ["I am cold.", "He is very tall and she is not, I think.", "zorblax!", "我爱你"]


@pytest.fixture(scope="module")
def handler(smoke_run: Path) -> GruEncoderHandler:
    h = GruEncoderHandler()
    h.initialize(FakeContext(smoke_run))
    return h


def call(handler: GruEncoderHandler, *bodies) -> list[tuple[int, dict]]:
    ctx = FakeContext(Path("."))
    out = handler.handle([{"body": b} for b in bodies], ctx)
    assert len(out) == len(bodies) and all(isinstance(b, bytes) for b in out)
    assert all(ctx.content_type[i] == "application/json" for i in range(len(bodies)))
    return [(ctx.status[i], json.loads(b)) for i, b in enumerate(out)]


def reference(run: Path, texts: list[str], h0: torch.Tensor | None = None, add_eos: bool = True):
    loaded = load_encoder(run)
    ids, lengths = pad_batch([loaded.tokenizer.encode(t, add_eos=add_eos).ids for t in texts])
    with torch.no_grad():
        output, hidden = loaded.encoder(ids, lengths, h0)
    return ids.numpy(), lengths.numpy(), output.numpy(), hidden.numpy()


def test_response_equals_in_process_encoder_to_the_last_float(handler, smoke_run: Path) -> None:
    [(status, body)] = call(handler, {"texts": TEXTS})
    assert status == 200
    ids, lengths, output, hidden = reference(smoke_run, TEXTS)
    assert body["ids"] == ids.tolist() and body["lengths"] == lengths.tolist()
    # JSON floats are float32's shortest round-trip decimals: parsing gives back the exact bits.
    assert np.array_equal(np.asarray(body["output"], np.float32), output)
    assert np.array_equal(np.asarray(body["hidden"], np.float32), hidden)
    b, t = ids.shape
    d_h, l_d = output.shape[2], hidden.shape[0]
    assert body["shapes"] == {"ids": [b, t], "lengths": [b], "output": [b, t, d_h], "hidden": [l_d, b, d_h]}
    assert body["tokens"][0] == ["i", "am", "cold", ".", "<eos>"] and body["tokens"][3] == ["我", "爱", "你", "<eos>"]
    assert body["model"]["name"] == "gru_encoder" and len(body["model"]["weights_sha256"]) == 64
    assert body["truncated"] == [False] * 4


@pytest.mark.parametrize("n", [1, 2, 5])
def test_shapes_and_zero_padding_for_n_texts(handler, n: int) -> None:
    texts = [" ".join(["word"] * (k * 3 + 1)) for k in range(n)]
    [(status, body)] = call(handler, {"texts": texts})
    assert status == 200
    out = np.asarray(body["output"])
    assert out.shape == (n, max(body["lengths"]), out.shape[2]) and np.asarray(body["hidden"]).shape[1] == n
    for row, length in enumerate(body["lengths"]):
        assert length == len(body["tokens"][row]) and not out[row, length:].any()
        assert all(i == 0 for i in body["ids"][row][length:])


def test_bare_string_and_return_selection(handler) -> None:
    [(s1, only_hidden), (s2, only_output)] = call(
        handler, {"texts": "i am cold .", "return": ["hidden"]}, {"texts": ["i am cold ."], "return": ["output"]}
    )
    assert (s1, s2) == (200, 200)
    assert "output" not in only_hidden and "output" not in only_hidden["shapes"] and len(only_hidden["hidden"][0]) == 1
    assert "hidden" not in only_output and only_output["shapes"]["output"][0] == 1


def test_a_server_batch_gives_each_request_its_own_tensors(handler) -> None:
    """Requests merged into one forward pass get what they get alone (their own B and T; floats within 1e-6 here)."""
    bodies = [{"texts": ["hi ."]}, {"texts": TEXTS}, {"texts": ["a much longer sentence than any other one here ."]}]
    together = call(handler, *bodies)
    for body, (status, got) in zip(bodies, together):
        [(_, alone)] = call(handler, body)
        assert status == 200 and got["shapes"] == alone["shapes"] and got["ids"] == alone["ids"]
        np.testing.assert_allclose(got["output"], alone["output"], atol=1e-6, rtol=0)
        np.testing.assert_allclose(got["hidden"], alone["hidden"], atol=1e-6, rtol=0)


def test_the_same_batch_composition_gives_the_same_bits(handler) -> None:
    """Batching changes the last bits only through the batch's make-up: the same requests batched the same
    way give byte-identical bodies, every time."""
    bodies = [{"texts": ["hi ."]}, {"texts": TEXTS}, {"texts": ["a much longer sentence than any other one here ."]}]
    first = call(handler, *bodies)
    assert all(call(handler, *bodies) == first for _ in range(3))


def test_h0_continuation_rules(handler, smoke_run: Path) -> None:
    # Chunks sent with add_eos=false, the last with <eos>: same as one pass over the joined text.
    [(_, first)] = call(handler, {"texts": ["i am"], "add_eos": False, "return": ["hidden"]})
    [(_, second)] = call(handler, {"texts": ["very cold ."], "h0": first["hidden"]})
    _, _, out_all, hidden_all = reference(smoke_run, ["i am very cold ."])
    np.testing.assert_allclose(second["hidden"], hidden_all, atol=1e-6, rtol=0)
    np.testing.assert_allclose(second["output"][0], out_all[0, 2:], atol=1e-6, rtol=0)
    # Default add_eos: the state carries the first text's <eos> too.
    [(_, a)] = call(handler, {"texts": ["i am"], "return": ["hidden"]})
    [(_, b)] = call(handler, {"texts": ["very cold ."], "h0": a["hidden"], "return": ["hidden"]})
    loaded = load_encoder(smoke_run)
    ids = loaded.tokenizer.encode("i am").ids + loaded.tokenizer.encode("very cold .").ids
    with torch.no_grad():
        _, h = loaded.encoder(torch.tensor([ids]))
    np.testing.assert_allclose(b["hidden"], h.numpy(), atol=1e-6, rtol=0)


BAD = [
    (b"{not json", 400, "invalid_json", None),
    (b"\xff\xfe{}", 400, "invalid_json", None),
    (b"", 400, "invalid_json", None),
    ([1, 2], 422, "validation_error", "body"),
    ({"text": ["a"]}, 422, "validation_error", "texts"),
    ({"texts": []}, 422, "validation_error", "texts"),
    ({"texts": [""]}, 422, "validation_error", "texts[0]"),
    ({"texts": ["ok", "   "]}, 422, "validation_error", "texts[1]"),
    ({"texts": ["ok", "\x00\x01"]}, 422, "validation_error", "texts[1]"),
    ({"texts": [3]}, 422, "validation_error", "texts[0]"),
    ({"texts": "ok", "extra": 1}, 422, "validation_error", "extra"),
    ({"texts": "ok", "return": ["all"]}, 422, "validation_error", "return[0]"),
    ({"texts": "ok", "return": []}, 422, "validation_error", "return"),
    ({"texts": ["x"] * 65}, 413, "too_many_texts", "texts"),
    ({"texts": ["x" * 10_001]}, 413, "input_too_long", "texts[0]"),
    ({"texts": [" ".join(["w"] * 200)]}, 413, "input_too_long", "texts[0]"),
    ({"texts": ["ok"], "h0": [[[0.0] * 3]]}, 422, "validation_error", "h0"),
    ({"texts": ["ok"], "h0": [[[float("nan")] * 32]]}, 422, "validation_error", "h0[0][0][0]"),
    ({"texts": ["ok"], "h0": [[[0.0] * 32], [[0.0]]]}, 422, "validation_error", "h0"),
    ({"texts": ["ok"], "h0": "zeros"}, 422, "validation_error", "h0"),
    # What Python's json makes of "\ud800" (TorchServe decodes JSON itself unless decode_input_request=false).
    ({"texts": ["ok", "\ud800 a"]}, 422, "validation_error", "texts[1]"),
    (None, 415, "unsupported_media_type", None),  # a form body: TorchServe hands over fields, no body
]


@pytest.mark.parametrize("body,code,type_,field", BAD, ids=[repr(b)[:40] for b, *_ in BAD])
def test_bad_request_gets_its_4xx_and_the_good_one_beside_it_succeeds(handler, body, code, type_, field) -> None:
    [(status, err), (good_status, good)] = call(handler, body, {"texts": ["i am cold ."]})
    assert (status, err["code"], err["type"]) == (code, code, type_), err
    assert err.get("field") == field and err["message"]
    assert good_status == 200 and good["lengths"] == [5]


def test_too_long_text_can_be_truncated_on_request(handler) -> None:
    [(status, body)] = call(handler, {"texts": [" ".join(["w"] * 200)], "truncate": True, "return": ["hidden"]})
    assert status == 200 and body["truncated"] == [True] and body["lengths"] == [128]


def test_response_too_large_is_a_413_not_a_broken_connection(smoke_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRU_ENCODER_MAX_BODY_BYTES", "4096")
    h = GruEncoderHandler()
    h.initialize(FakeContext(smoke_run))
    ctx = FakeContext(Path("."))
    [big, small] = h.handle([{"body": {"texts": TEXTS}}, {"body": {"texts": "hi", "return": ["hidden"]}}], ctx)
    assert ctx.status == {0: 413, 1: 200}
    assert orjson.loads(big)["type"] == "response_too_large" and "hidden" in orjson.loads(big)["message"]


def test_json_is_compact(handler) -> None:
    ctx = FakeContext(Path("."))
    [raw] = handler.handle([{"body": b'{"texts": "i am cold ."}'}], ctx)
    assert b"\n" not in raw and b", " not in raw and b": " not in raw


def test_missing_artifacts_stop_initialize_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="make train"):
        GruEncoderHandler().initialize(FakeContext(tmp_path))


@pytest.mark.parametrize(
    "accept,want",
    [
        (None, "json"), ("*/*", "json"), ("application/json", "json"), ("application/x-npz", "npz"),
        ("Application/X-NPZ; q=0.5, application/json;q=0.1", "npz"), ("application/json, application/x-npz;q=0", "json"),
    ],
)
def test_accept_header_picks_the_format(accept: str | None, want: str) -> None:
    assert response_format(accept) == want


def test_npz_response_equals_json_equals_in_process_encoder(handler, smoke_run: Path) -> None:
    """Accept: application/x-npz gives the same tensors (exact bits) and metadata as the JSON, in one np.load."""
    body = {"texts": TEXTS}
    # Each alone, as the reference is: a forward pass over other texts too may differ in the last bit.
    ctx_npz = FakeContext(Path("."), request_headers=[{"Accept": "application/x-npz"}])
    ctx_json = FakeContext(Path("."), request_headers=[{"accept": "application/json"}])
    [raw_npz], [raw_json] = handler.handle([{"body": body}], ctx_npz), handler.handle([{"body": body}], ctx_json)
    assert ctx_npz.status == ctx_json.status == {0: 200}
    assert (ctx_npz.content_type[0], ctx_json.content_type[0]) == ("application/x-npz", "application/json")
    z, j = np.load(io.BytesIO(raw_npz)), orjson.loads(raw_json)
    ids, lengths, output, hidden = reference(smoke_run, TEXTS)
    assert z["output"].dtype == np.float32 and z["ids"].dtype == np.int64
    assert np.array_equal(z["output"], output) and np.array_equal(z["hidden"], hidden)
    assert np.array_equal(z["output"], np.asarray(j["output"], np.float32))
    assert np.array_equal(z["ids"], ids) and np.array_equal(z["lengths"], lengths)
    assert z["truncated"].tolist() == j["truncated"] and json.loads(z["model"].item()) == j["model"]
    assert [row[:n].tolist() for row, n in zip(z["tokens"], z["lengths"])] == j["tokens"]
    assert {k: list(z[k].shape) for k in j["shapes"]} == j["shapes"]
    # The client reads the same thing (contract.Encoded, which the client returns).
    from gru_encoder.api.contract import Encoded

    enc = Encoded.from_npz(raw_npz)
    assert enc.tokens == j["tokens"] and enc.model == j["model"] and np.array_equal(enc.hidden, hidden)


def test_npz_only_what_was_asked_and_errors_stay_json(handler) -> None:
    npz = {"Accept": "application/x-npz"}
    ctx = FakeContext(Path("."), request_headers=[npz, npz])
    raw, err = handler.handle([{"body": {"texts": "hi", "return": ["hidden"]}}, {"body": {"texts": []}}], ctx)
    assert "output" not in np.load(io.BytesIO(raw)).files
    assert ctx.status[1] == 422 and ctx.content_type[1] == "application/json" and orjson.loads(err)["type"] == "validation_error"


def test_npz_response_too_large_is_a_413(smoke_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRU_ENCODER_MAX_BODY_BYTES", "4096")
    h = GruEncoderHandler()
    h.initialize(FakeContext(smoke_run))
    ctx = FakeContext(Path("."), request_headers=[{"Accept": "application/x-npz"}])
    [big] = h.handle([{"body": {"texts": TEXTS * 4}}], ctx)
    assert ctx.status == {0: 413} and ctx.content_type[0] == "application/json"
    assert orjson.loads(big)["type"] == "response_too_large"


@pytest.mark.parametrize(
    ("gpu_id", "cuda_available", "expected"),
    [(1, True, "cuda:1"), (0, True, "cuda:0"), (1, False, "cpu"), (None, True, "cpu"), (None, False, "cpu")],
)
def test_device_is_the_gpu_torchserve_assigns_else_the_cpu(
    smoke_run: Path, monkeypatch: pytest.MonkeyPatch, gpu_id: int | None, cuda_available: bool, expected: str
) -> None:
    """TorchServe puts a worker's GPU in system_properties["gpu_id"]: the handler loads the weights
    and runs the service there when CUDA is usable, and on the CPU otherwise (no GPU on this machine:
    CUDA is faked and the weights are loaded on the CPU, while what the handler asked for is recorded)."""
    import handlers.encoder_handler as module

    asked: dict[str, str] = {}

    def load_on_cpu(run_dir, map_location="cpu"):
        asked["map_location"] = str(map_location)
        return load_encoder(run_dir, map_location="cpu")

    class RecordingService:
        def __init__(self, loaded, limits, device, version):
            asked["service_device"] = str(device)
            self.encoder = loaded.encoder  # what the handler's router reads (its config)

    monkeypatch.setattr(module.torch.cuda, "is_available", lambda: cuda_available)
    monkeypatch.setattr(module, "load_encoder", load_on_cpu)
    monkeypatch.setattr(module, "EncoderService", RecordingService)
    ctx = FakeContext(smoke_run)
    ctx.system_properties["gpu_id"] = gpu_id
    GruEncoderHandler().initialize(ctx)
    assert asked == {"map_location": expected, "service_device": expected}
