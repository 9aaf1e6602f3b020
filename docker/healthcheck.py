#!/usr/bin/env python3
"""Container health: one real prediction, checked against the contract. Exit 0 when the model answers.

GET /ping is not enough: it stays "Healthy" while the model's worker crash-loops.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

from gru_encoder.api.contract import check_response
from gru_encoder.host.settings import ServingSettings

# The inference port of the serving settings (GRU_ENCODER_PORT), on the container's own loopback.
URL = os.environ.get("HEALTHCHECK_URL", f"http://127.0.0.1:{ServingSettings.from_env().port}/predictions/gru_encoder")


def main() -> int:
    sent = {"texts": ["ping"], "return": ["hidden"]}
    body = json.dumps(sent).encode()
    request = urllib.request.Request(URL, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=8) as response:
            reply = json.load(response)
    except Exception as exc:  # HTTPError (non-2xx), URLError, timeout, bad JSON: all unhealthy
        print(f"unhealthy: {exc}")
        return 1
    problem = check_response(reply, len(sent["texts"]), sent["return"])
    if problem:
        print(f"unhealthy: {problem}")
        return 1
    print(f"healthy: hidden {reply['shapes']['hidden']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
