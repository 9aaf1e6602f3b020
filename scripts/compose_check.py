"""Check a deployed gru-encoder from outside its container (used by scripts/compose-test.sh).

Sends real requests to URL, checks every shape against the run's config, compares the served
tensors with the same run's encoder run here in-process (so the container serves exactly that
model), and prints one served prediction. Exit status 0 when everything holds.

    .venv/bin/python scripts/compose_check.py --url http://127.0.0.1:8080 --run-dir runs/smoke
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import requests
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gru_encoder.artifacts import load_encoder  # noqa: E402

TEXTS = ["i am cold .", "he is tall", "Tom didn't know what to say."]


def post(url: str, body: dict) -> requests.Response:
    return requests.post(f"{url}/predictions/gru_encoder", json=body, timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="inference base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--run-dir", required=True, help="the run folder the served .mar was built from")
    args = parser.parse_args(argv)

    loaded = load_encoder(args.run_dir)
    cfg = loaded.encoder.config
    d = 2 if cfg.bidirectional else 1
    hidden_size, layers = cfg.hidden_size, cfg.num_layers

    # 1. One text, hidden only: printed whole, as a real served prediction.
    r = post(args.url, {"texts": ["i am cold ."], "return": ["hidden"]})
    print(f"POST /predictions/gru_encoder {{\"texts\": [\"i am cold .\"], \"return\": [\"hidden\"]}} -> {r.status_code}")
    print(r.text)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["shapes"]["hidden"] == [layers * d, 1, hidden_size], body["shapes"]
    assert "output" not in body

    # 2. A batch, both tensors: shapes, padding, and the same numbers as the encoder run here.
    r = post(args.url, {"texts": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    batch, seq = len(TEXTS), max(body["lengths"])
    expected_ids = [loaded.tokenizer.encode(t).ids for t in TEXTS]
    assert [row[: len(e)] for row, e in zip(body["ids"], expected_ids)] == expected_ids, "served ids differ from the tokenizer's"
    assert body["lengths"] == [len(e) for e in expected_ids]
    shapes = {"ids": [batch, seq], "lengths": [batch], "output": [batch, seq, d * hidden_size], "hidden": [layers * d, batch, hidden_size]}
    assert body["shapes"] == shapes, (body["shapes"], shapes)
    output = np.asarray(body["output"], np.float32)  # (B, T, D*H)
    hidden = np.asarray(body["hidden"], np.float32)  # (L*D, B, H)
    assert list(output.shape) == shapes["output"] and list(hidden.shape) == shapes["hidden"]
    with torch.no_grad():
        ref_out, ref_hidden = loaded.encoder(torch.tensor(body["ids"]), torch.tensor(body["lengths"]))
    err = max(np.abs(output - ref_out.numpy()).max(), np.abs(hidden - ref_hidden.numpy()).max())
    assert err < 1e-5, f"served tensors differ from the local encoder by {err}"
    for b, n in enumerate(body["lengths"]):
        assert not output[b, n:].any(), "padded output steps must be exactly 0"
    print(f"batch of {batch}: shapes {json.dumps(shapes)}; max |served - local encoder| = {err:.2e}")

    # 3. Bad input is the client's error, answered as JSON.
    r = post(args.url, {"texts": []})
    assert r.status_code == 422 and r.json()["type"] == "validation_error", r.text
    print(f"empty texts -> {r.status_code} {r.json()['type']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
