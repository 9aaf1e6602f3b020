"""Pinned traffic per version read from TorchServe's Prometheus text (gru_encoder/host/traffic.py): the text
below is a real TorchServe 0.12's GET /metrics (two versions served, one pinned request to each), cut to
a few metrics; fetch against a local HTTP server and a closed port."""

from __future__ import annotations

import http.server
import threading
from typing import Iterator

import pytest

from gru_encoder.host import traffic
from loadtests.torchserve_process import free_port

# Verbatim lines of a served /metrics: the Java client's trailing comma in the braces, doubles as 1.7E9,
# TorchServe's own metrics with their own label names (model_version "default": the unpinned path).
REAL = """\
# HELP gru_encoder_batch_size Torchserve prometheus gauge metric with unit: Count
# TYPE gru_encoder_batch_size gauge
gru_encoder_batch_size{ModelName="gru_encoder",version="1.0",Hostname="vm",} 1.0
gru_encoder_batch_size{ModelName="gru_encoder",version="2.0",Hostname="vm",} 1.0
# HELP MemoryUtilization Torchserve prometheus gauge metric with unit: Percent
# TYPE MemoryUtilization gauge
MemoryUtilization{Level="Host",Hostname="vm",} 3.6
# HELP gru_encoder_pinned_request_time_seconds Torchserve prometheus gauge metric with unit: Seconds
# TYPE gru_encoder_pinned_request_time_seconds gauge
gru_encoder_pinned_request_time_seconds{ModelName="gru_encoder",version="1.0",Hostname="vm",} 1.796592512673069E9
gru_encoder_pinned_request_time_seconds{ModelName="gru_encoder",version="2.0",Hostname="vm",} 1.796592512518027E9
# HELP gru_encoder_requests_total Torchserve prometheus counter metric with unit: Count
# TYPE gru_encoder_requests_total counter
gru_encoder_requests_total{ModelName="gru_encoder",version="2.0",route="predictions",status="200",pinned="1",Hostname="vm",} 1.0
gru_encoder_requests_total{ModelName="gru_encoder",version="2.0",route="predictions",status="200",pinned="0",Hostname="vm",} 2.0
gru_encoder_requests_total{ModelName="gru_encoder",version="1.0",route="predictions",status="200",pinned="0",Hostname="vm",} 2.0
gru_encoder_requests_total{ModelName="gru_encoder",version="1.0",route="predictions",status="200",pinned="1",Hostname="vm",} 1.0
# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{model_name="gru_encoder",model_version="default",hostname="vm",} 2.0
ts_inference_requests_total{model_name="gru_encoder",model_version="1.0",hostname="vm",} 1.0
ts_inference_requests_total{model_name="gru_encoder",model_version="2.0",hostname="vm",} 3.0
"""
# The same server before any pinned request: the gauge is declared, with no sample yet.
UNPINNED = "\n".join(line for line in REAL.splitlines() if not line.startswith("gru_encoder_pinned_request_time_seconds{"))
# A server whose handler predates the gauge: not even declared.
OLDER = "\n".join(line for line in REAL.splitlines() if "gru_encoder_pinned_request_time_seconds" not in line)


def test_the_newest_pinned_request_of_each_version() -> None:
    assert traffic.last_pinned(REAL, "1.0") == 1796592512.673069
    assert traffic.last_pinned(REAL, "2.0") == 1796592512.518027
    assert traffic.last_pinned(REAL, "3.0") is None
    assert traffic.last_pinned(REAL, "1.0", model="other") is None


def test_the_newest_across_label_sets() -> None:
    # Another host's label set (a second replica in federated text), newer for 2.0 and older for 1.0.
    other = REAL + ('gru_encoder_pinned_request_time_seconds{ModelName="gru_encoder",version="2.0",Hostname="replica-2",} 1.7965926E9\n'
                    'gru_encoder_pinned_request_time_seconds{ModelName="gru_encoder",version="1.0",Hostname="replica-2",} 1.7E9\n')
    assert traffic.last_pinned(other, "2.0") == 1796592600.0
    assert traffic.last_pinned(other, "1.0") == 1796592512.673069


def test_no_pinned_request_yet_is_told_apart_from_no_gauge() -> None:
    assert traffic.last_pinned(UNPINNED, "1.0") is None and traffic.declared(UNPINNED)
    assert traffic.last_pinned(OLDER, "1.0") is None and not traffic.declared(OLDER)


def test_samples_read_labels_and_values_of_one_metric_only() -> None:
    got = list(traffic.samples(REAL, "gru_encoder_requests_total"))
    assert len(got) == 4 and sum(v for labels, v in got if labels["pinned"] == "1") == 2.0
    assert got[0][0] == {"ModelName": "gru_encoder", "version": "2.0", "route": "predictions", "status": "200", "pinned": "1",
                         "Hostname": "vm"}
    assert [labels["model_version"] for labels, _ in traffic.samples(REAL, "ts_inference_requests_total")] == ["default", "1.0", "2.0"]
    assert list(traffic.samples(REAL, "gru_encoder_requests")) == []  # a name's prefix is another metric
    escaped = 'm{a="x\\"y",b="1\\\\2"} 5 1700000000000\n'  # escapes and a timestamp, as the text format allows
    assert list(traffic.samples(escaped, "m")) == [({"a": 'x"y', "b": "1\\2"}, 5.0)]


@pytest.fixture()
def metrics_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, status = (REAL.encode(), 200) if self.path == "/metrics" else (b"Resource not found", 404)
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_reads_the_metrics_text(metrics_server: str) -> None:
    assert traffic.last_pinned(traffic.fetch(f"{metrics_server}/metrics"), "2.0") == 1796592512.518027


def test_fetch_says_where_it_looked_when_nothing_answers(metrics_server: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    with pytest.raises(traffic.TrafficError, match=rf"TorchServe's metrics at {url} did not answer \(ConnectionError, timeout 1 s\): "
                                                   r"is the server running .*metrics_port in logs/serving-settings.json"):
        traffic.fetch(url, timeout=1)
    with pytest.raises(traffic.TrafficError, match=r"/nothing answered HTTP 404 \('Resource not found'\).*metrics_mode=prometheus"):
        traffic.fetch(f"{metrics_server}/nothing")
