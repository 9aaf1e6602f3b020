#!/usr/bin/env python3
"""Container health: one real prediction (standard library only). Exit 0 when the model answers.

GET /ping is not enough: it stays "Healthy" while the model's worker crash-loops.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

URL = os.environ.get("HEALTHCHECK_URL", "http://127.0.0.1:8080/predictions/gru_encoder")


def main() -> int:
    body = json.dumps({"texts": ["ping"], "return": ["hidden"]}).encode()
    request = urllib.request.Request(URL, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=8) as response:
            reply = json.load(response)
    except Exception as exc:  # HTTPError (non-2xx), URLError, timeout, bad JSON: all unhealthy
        print(f"unhealthy: {exc}")
        return 1
    shape = reply.get("shapes", {}).get("hidden")
    if not shape or shape[1] != 1:
        print(f"unhealthy: unexpected reply shapes {reply.get('shapes')}")
        return 1
    print(f"healthy: hidden {shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
