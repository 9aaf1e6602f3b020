"""What a caller of the local server cannot do: register models, or load archives from elsewhere.

Every port is bound to 127.0.0.1. TorchServe alone (the container's settings) has model registration off
(tests/integration/test_server.py); behind make serve's local gateway it is on, for `gru-encoder models`,
and `allowed_urls` (rendered from the settings) confines registration to .mar files of the model store
itself: shown here on a real TorchServe started as make serve starts it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from loadtests.torchserve_process import TorchServe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server_with_model_api(smoke_mar: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("ts_model_api")
    store = work / "store"  # its own model store: the allowed archive below is registered into it
    store.mkdir()
    shutil.copy(smoke_mar / "gru_encoder.mar", store / "gru_encoder.mar")
    ts = TorchServe(store, work, gateway="local").start()
    yield ts
    ts.stop()


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/gru_encoder.mar",  # a remote archive: refused before any download
        "http://127.0.0.1:1/evil.mar",
        "file:///etc/passwd",  # a local file that is not an archive
        "file:///tmp/elsewhere/gru_encoder.mar",  # an archive outside the model store
    ],
)
def test_registration_from_outside_allowed_urls_is_refused(server_with_model_api, url: str) -> None:
    r = requests.post(f"{server_with_model_api.management_url}/models", params={"url": url, "model_name": "evil"}, timeout=30)
    assert r.status_code in (400, 403, 404), (r.status_code, r.text)
    assert "allowed" in r.text.lower(), r.text  # TorchServe says the URL is not an allowed one
    models = requests.get(f"{server_with_model_api.management_url}/models", timeout=10).json()["models"]
    assert [m["modelName"] for m in models] == ["gru_encoder"]


def test_the_same_server_does_register_an_allowed_archive(server_with_model_api) -> None:
    """So the refusals above come from allowed_urls, not from a registration API that never works."""
    store = Path(server_with_model_api.settings.model_store)
    copy = store / "second.mar"
    copy.write_bytes((store / "gru_encoder.mar").read_bytes())
    url = copy.name  # an archive already in the model store, by name (what TorchServe's own load_models does)
    r = requests.post(
        f"{server_with_model_api.management_url}/models",
        params={"url": url, "model_name": "second", "initial_workers": 0}, timeout=60,
    )
    assert r.status_code == 200, r.text
    models = requests.get(f"{server_with_model_api.management_url}/models", timeout=10).json()["models"]
    assert sorted(m["modelName"] for m in models) == ["gru_encoder", "second"]
