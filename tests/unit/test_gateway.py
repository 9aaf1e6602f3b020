"""The gateway (docker/gateway), without Docker: the entrypoint's key and settings checks and what it
renders, and the nginx configuration's routes and error bodies (the template and the files generated from
the route table). tests/integration/test_local_gateway.py runs it with the host's nginx; tests/e2e in Docker.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import get_args

import pytest

from gru_encoder.api.contract import ALSO_SENT_AS, ERROR_STATUS, ErrorType
from gru_encoder.api.openai_api import error_kind
from gru_encoder.api.schema import ERROR_BODY

from gru_encoder.api import release_conf
from gru_encoder.api.gateway_conf import FILES, render_all
from gru_encoder.api.openapi import openapi_document
from gru_encoder.api.routes import KEYED, OPENAI, ROUTES, Route, path_of
from tests import ROOT

GATEWAY = ROOT / "docker" / "gateway"
TEMPLATE = GATEWAY / "nginx.conf.template"
GENERATED = GATEWAY / "generated"
KEY_A = "Zx3vQ9-abcdefghijklmnopqrstuvwxyz_0123456789"  # 44 characters, like token_urlsafe(32)
KEY_B = "0123456789abcdef0123456789abcdef"  # 32 hex digits, like openssl rand -hex 16


def render(tmp_path: Path, env: dict[str, str] | None = None, key_file: str | None = None) -> subprocess.CompletedProcess:
    """Run `entrypoint.sh --render-only` with only the given settings, into tmp_path/conf."""
    clean = {"PATH": os.environ["PATH"], "GATEWAY_CONF_DIR": str(tmp_path / "conf"), "GATEWAY_TEMPLATE": str(TEMPLATE),
             "GATEWAY_API_KEYS_FILE": str(tmp_path / "no-such-default")}
    if key_file is not None:
        path = tmp_path / "api_key"
        path.write_text(key_file)
        clean["GATEWAY_API_KEYS_FILE"] = str(path)
    else:
        del clean["GATEWAY_API_KEYS_FILE"]  # the default, /run/secrets/api_key, is absent on the host
    return subprocess.run(["bash", str(GATEWAY / "entrypoint.sh"), "--render-only"], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def test_keys_from_the_file_and_the_environment_render_into_the_key_map(tmp_path: Path) -> None:
    # Comments, blank lines, CRLF and spaces around a key are fine; a key in both sources counts once.
    result = render(tmp_path, {"GATEWAY_API_KEYS": f"{KEY_B}, {KEY_A}"}, key_file=f"# rotated 2026-11\r\n\n  {KEY_A}  \r\n")
    assert result.returncode == 0, result.stderr
    key_map = [line for line in (tmp_path / "conf" / "keys.map").read_text().splitlines() if line != 'default "";']
    assert sorted(key_map) == sorted(f'"~^{k}$" "{fingerprint(k)}";' for k in (KEY_A, KEY_B))
    assert stat.S_IMODE((tmp_path / "conf" / "keys.map").stat().st_mode) == 0o600
    # The log line names keys by fingerprint only.
    assert f"2 API key(s) (fingerprints {fingerprint(KEY_B)} {fingerprint(KEY_A)})" in result.stderr or \
        f"2 API key(s) (fingerprints {fingerprint(KEY_A)} {fingerprint(KEY_B)})" in result.stderr
    assert KEY_A not in result.stderr + result.stdout and KEY_B not in result.stderr + result.stdout


def test_settings_are_rendered_and_every_placeholder_filled(tmp_path: Path) -> None:
    env = {"GATEWAY_API_KEYS": KEY_A, "GATEWAY_MAX_BODY_SIZE": "512k", "GATEWAY_RATE": "600r/m", "GATEWAY_BURST": "7",
           "GATEWAY_PROXY_TIMEOUT": "90", "GATEWAY_UPSTREAM": "ts.internal:8085", "GATEWAY_WORKERS": "2"}
    result = render(tmp_path, env)
    assert result.returncode == 0, result.stderr
    conf = "".join((tmp_path / "conf" / name).read_text() for name in ("nginx.conf", *FILES))
    assert "@@" not in conf
    assert "worker_processes 2;" in conf and "client_max_body_size 512k;" in conf
    assert "rate=600r/m;" in conf and "burst=7 nodelay;" in conf
    assert "server ts.internal:8085 max_fails=0;" in (tmp_path / "conf" / "upstream.conf").read_text()
    assert "proxy_read_timeout 90s;" in conf and "proxy_read_timeout 95s;" in conf  # the edge waits 5 s longer
    assert "gateway limit of 524288 bytes" in conf
    assert KEY_A not in conf  # keys live in keys.map only


def test_defaults(tmp_path: Path) -> None:
    result = render(tmp_path, {"GATEWAY_API_KEYS": KEY_A})
    assert result.returncode == 0, result.stderr
    conf = "".join((tmp_path / "conf" / name).read_text() for name in ("nginx.conf", *FILES))
    assert "client_max_body_size 2m;" in conf and "rate=50r/s;" in conf and "burst=100 nodelay;" in conf
    assert "server torchserve:8080 max_fails=0;" in (tmp_path / "conf" / "upstream.conf").read_text()
    assert "proxy_read_timeout 60s;" in conf


@pytest.mark.parametrize(
    ("env", "key_file", "message"),
    [
        ({}, None, "no API key"),
        ({"GATEWAY_API_KEYS": " , "}, None, "no API key"),
        ({}, "# only a comment\n\n", "no API key"),
        ({"GATEWAY_API_KEYS": KEY_A, "GATEWAY_RATE": "fast"}, None, "GATEWAY_RATE='fast' is not valid"),
        ({"GATEWAY_API_KEYS": KEY_A, "GATEWAY_MAX_BODY_SIZE": "2g"}, None, "GATEWAY_MAX_BODY_SIZE='2g' is not valid"),
        ({"GATEWAY_API_KEYS": KEY_A, "GATEWAY_BURST": "-1"}, None, "GATEWAY_BURST='-1' is not valid"),
        ({"GATEWAY_API_KEYS": KEY_A, "GATEWAY_UPSTREAM": "torchserve:8080; include /etc/passwd"}, None, "GATEWAY_UPSTREAM="),
    ],
    ids=["nothing", "empty env", "comment only", "rate", "size", "burst", "upstream"],
)
def test_refuses_to_start_with_a_message_that_says_what_to_do(tmp_path: Path, env: dict, key_file: str | None, message: str) -> None:
    result = render(tmp_path, env, key_file)
    assert result.returncode != 0
    assert result.stderr.startswith("gateway: refusing to start: "), result.stderr
    assert message in result.stderr, result.stderr
    if "key" in message:
        assert "token_urlsafe" in result.stderr or "no API key" not in message
    assert not (tmp_path / "conf" / "nginx.conf").exists()


# A line that is not a key, beside a valid one: (env, key file, what the warning says, the bad content).
BAD_KEYS = [
    ({"GATEWAY_API_KEYS": f"short-key {KEY_B}"}, None, ["key 1 of GATEWAY_API_KEYS: it is 9 characters long; keys need at least 24"],
     ["short-key"]),
    ({}, f"{KEY_B}\ntoo-short\n", ["line 2 of", "it is 9 characters long"], ["too-short"]),
    ({"GATEWAY_API_KEYS": f'{KEY_B},{KEY_A}"; default "x'}, None,
     ["key 2 of GATEWAY_API_KEYS: it has characters other than A-Z a-z 0-9 _ -", "key 3 of", "key 4 of"], ['"x', "default"]),
    ({"GATEWAY_API_KEYS": f"~{KEY_A.upper()} {KEY_B}"}, None, ["key 1 of GATEWAY_API_KEYS: it has characters other than"],
     [KEY_A.upper()]),
    ({}, f"# rotated\n{KEY_B}\n{KEY_A} # the old one\n", ["line 3 of", "it has characters other than"], ["the old one"]),
]


@pytest.mark.parametrize(("env", "key_file", "warnings", "secrets"), BAD_KEYS,
                         ids=["short env key", "short file key", "quote", "regex", "comment after a key"])
def test_a_bad_key_line_is_skipped_with_a_warning_naming_it_and_the_valid_keys_serve(
        tmp_path: Path, env: dict, key_file: str | None, warnings: list[str], secrets: list[str]) -> None:
    """At start and at --reload (both render first): a bad line added to the key file no longer refuses
    the reload and leaves the next start to crash-loop on it."""
    result = render(tmp_path, env, key_file)
    assert result.returncode == 0, result.stderr
    assert "refusing" not in result.stderr and "gateway: warning: skipping the API key at " in result.stderr
    for warning in warnings:
        assert warning in result.stderr, result.stderr
    assert "skipped (named above), 1 valid served; fix or remove those lines" in result.stderr
    key_map = [line for line in (tmp_path / "conf" / "keys.map").read_text().splitlines() if line != 'default "";']
    assert key_map == [f'"~^{KEY_B}$" "{fingerprint(KEY_B)}";'], key_map
    for secret in (*secrets, KEY_A, KEY_B):  # no key and no bad line is printed, only where they are
        assert secret not in result.stderr + result.stdout


@pytest.mark.parametrize(("env", "key_file"), [({"GATEWAY_API_KEYS": "short-key"}, None), ({}, "too-short\n~" + KEY_A + "\n"),
                                                ({"GATEWAY_API_KEYS": "~" + KEY_A}, "# a comment\nshort\n")],
                         ids=["env", "file", "both"])
def test_refuses_to_start_when_no_key_is_valid_and_says_how_to_fix_it(tmp_path: Path, env: dict, key_file: str | None) -> None:
    result = render(tmp_path, env, key_file)
    assert result.returncode != 0
    *warnings, refusal = result.stderr.strip().splitlines()
    assert warnings and all(w.startswith("gateway: warning: skipping the API key at ") for w in warnings), result.stderr
    assert refusal.startswith("gateway: refusing to start: none of the ") and "is valid (each is named above)" in refusal
    assert "at least 24 characters of A-Z a-z 0-9 _ -" in refusal and "token_urlsafe" in refusal
    assert KEY_A not in result.stderr and "short" not in result.stderr.replace("short-", "")
    assert not (tmp_path / "conf" / "nginx.conf").exists()


def test_a_named_key_file_must_exist_and_be_a_file(tmp_path: Path) -> None:
    for path in (tmp_path / "missing", tmp_path):  # a folder: what a bind mount of a missing file leaves
        result = subprocess.run(["bash", str(GATEWAY / "entrypoint.sh"), "--render-only"], capture_output=True, text=True,
                                env={"PATH": os.environ["PATH"], "GATEWAY_CONF_DIR": str(tmp_path / "conf"),
                                     "GATEWAY_TEMPLATE": str(TEMPLATE), "GATEWAY_API_KEYS_FILE": str(path)}, timeout=60)
        assert result.returncode != 0 and "is missing or not a file" in result.stderr, result.stderr


# ---- the nginx configuration: the template and the files generated from the route table

@pytest.fixture(scope="module")
def conf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The rendered configuration: nginx.conf (the template) and the generated maps, edge and upstream files."""
    tmp_path = tmp_path_factory.mktemp("gateway")
    result = render(tmp_path, {"GATEWAY_API_KEYS": KEY_A})
    assert result.returncode == 0, result.stderr
    out = {name: (tmp_path / "conf" / name).read_text() for name in ("nginx.conf", *FILES)}
    out["all"] = "\n".join(out.values())
    return out


def test_the_generated_files_are_current() -> None:
    for name, text in render_all().items():
        assert (GENERATED / name).read_text() == text, f"docker/gateway/generated/{name} is stale: run `make gateway-conf`"


def test_the_template_restates_no_route_and_no_error_body() -> None:
    template = TEMPLATE.read_text()
    assert not re.search(r"return \d{3} '", template), "error bodies belong to the generated files"
    assert not re.search(r"location\s*=?\s*/(predictions|v1|info|ping|health)", template)
    assert not re.search(r"^\s*(/predictions|/v1/|/info|/ping|/health)\S* ", template, re.M)  # no map lines
    for name in FILES:
        assert f"include @@CONF_DIR@@/{name};" in template


def test_every_error_body_is_an_error_response_with_its_own_status(conf: dict[str, str]) -> None:
    bodies = re.findall(r"return ([45]\d\d) '(\{.*\})\\n';", conf["all"])
    assert len(bodies) >= 10
    seen = set()
    openai_seen = set()
    for code, body in bodies:
        # Fill in what nginx fills in: variables, at request time.
        filled = body.replace("$request_method", "GET").replace("$gw_allow", "POST")
        assert "@@" not in filled, body
        parsed = json.loads(filled.replace("\\'", "'"))
        if "error" in parsed:  # /v1/*: OpenAI's shape, the same types and statuses (gru_encoder/api/openai_api.py)
            assert set(parsed["error"]) == {"message", "type", "param", "code"} and parsed["error"]["message"], body
            assert parsed["error"]["type"] == error_kind(int(code)), body
            parsed = {"code": int(code), "type": parsed["error"]["code"], "message": parsed["error"]["message"]}
            openai_seen.add(parsed["type"])
        error = ERROR_BODY.validate_python(parsed)
        assert error.code == int(code), body
        # The one type -> status map (contract.ERROR_STATUS, and ALSO_SENT_AS for `unavailable`).
        assert error.code == ERROR_STATUS[error.type] or error.code in ALSO_SENT_AS.get(error.type, ()), body
        seen.add(error.type)
    gateway_types = {"unauthorized", "not_found", "method_not_allowed", "request_too_large", "rate_limited", "overloaded",
                     "unavailable", "bad_request", "header_too_large", "unsupported_media_type", "internal_error"}
    assert gateway_types <= seen <= set(get_args(ErrorType))
    assert openai_seen == {t for t in seen if t in gateway_types | {"internal_error"}}  # every one has its OpenAI twin


ROUTE_METHODS = [("/predictions/gru_encoder", "POST"), ("/v1/embeddings", "POST"), ("/v1/models", "GET"), ("/info", "GET")]
TORCHSERVE_ERRORS = ["404", "500", "502", "503", "504", "507"]
PINNED = '"^/predictions/gru_encoder/([0-9A-Za-z][0-9A-Za-z._-]{0,31})$"'


def locations(text: str) -> dict[str, str]:
    """Each `location = /path {...}`, `location ~ "regex" {...}` or `location @name {...}` block of a rendered file,
    by path, quoted regex or name."""
    found = {}
    for m in re.finditer(r"^        location (?:[=~] )?(\S+) \{\n(.*?)^        \}$", text, re.M | re.S):
        found[m.group(1)] = m.group(2)
    return found


def test_only_the_listed_routes_and_only_torchserves_own_errors_are_rewritten(conf: dict[str, str]) -> None:
    edge, upstream = locations(conf["edge.conf"]), locations(conf["upstream-server.conf"])
    public = [p for p in edge if p.startswith("/") and p != "/_probe" and not p.startswith("/_errors/")]
    assert sorted(public) == ["/", "/health", "/info", "/ping", "/predictions/gru_encoder", "/v1/embeddings", "/v1/models"]
    assert sorted(public) == sorted(["/", *(r.path for r in ROUTES if not r.params)])
    # A path with a parameter is one regex location that lets only its pattern through (nothing else reaches TorchServe).
    assert sorted(p for p in edge if p.startswith('"')) == sorted(f'"{r.regex}"' for r in ROUTES if r.params) == [PINNED]
    assert edge["/_probe"].lstrip().startswith("internal;")
    assert all(edge[f"/_errors/{code}"].lstrip().startswith("internal;") for code in (400, 414, 505))
    assert edge["/"].strip() == "return 404;"
    # The edge never rewrites an answer from behind it: the handler's 4xx JSON passes unchanged.
    assert "proxy_intercept_errors" not in conf["edge.conf"] and "proxy_intercept_errors on;" in conf["upstream-server.conf"]
    # TorchServe's own errors (404 model not loaded, 500/507 worker died, 503 queue full) and nginx's
    # 502/504; never 400/413/415/422, which the handler answers in the project's shape. Each named
    # location answers in OpenAI's shape on /v1/*.
    server_level = conf["upstream-server.conf"][: conf["upstream-server.conf"].index("\n        location ")]
    assert sorted(re.findall(r"error_page (\d{3}) (?:=\d{3} )?@", server_level)) == TORCHSERVE_ERRORS
    for name, block in upstream.items():
        if name.startswith("@"):
            assert "if ($gw_v1) {" in block, name
    # Key and method are checked before anything is sent on; the key never travels to TorchServe.
    for path, method in ROUTE_METHODS:
        location = edge[path]
        assert 'if ($gw_key_id = "")' in location and f"if ($request_method !~ ^({method})$)" in location, path
        assert "limit_req zone=per_key" in location and "limit_conn per_key_inflight 2;" in location, path
        # Every route reaches the handler through the upstream server, which maps TorchServe's errors.
        assert f"proxy_pass http://gateway_upstream_server{path};" in location, path
        assert path in upstream, path
        # Each is named in the access log and has its methods in the Allow map.
        assert re.search(rf"^        {re.escape(path)} \$uri;$", conf["maps.conf"], re.M), path
        assert re.search(rf'^        {re.escape(path)} "{method}";$', conf["maps.conf"], re.M), path
    # The pinned route: key, method and limits as the others; TorchServe's 404 there is a version it does not serve.
    pinned = edge[PINNED]
    assert 'if ($gw_key_id = "")' in pinned and "if ($request_method !~ ^(POST)$)" in pinned and "limit_req zone=per_key" in pinned
    assert "proxy_pass http://gateway_upstream_server/predictions/gru_encoder/$gw_version;" in pinned
    assert "error_page 404 @version_not_served;" in upstream[PINNED] and "=503" not in upstream[PINNED]
    assert sorted(re.findall(r"error_page (\d{3}) ", upstream[PINNED])) == TORCHSERVE_ERRORS
    assert "proxy_pass http://$gw_torchserve/predictions/gru_encoder/$gw_version;" in upstream[PINNED]
    assert '"not_found"' in upstream["@version_not_served"] and "version $gw_version is not served" in upstream["@version_not_served"]
    assert re.search(rf'^    map \$uri \$gw_version {{\n        "~{re.escape(PINNED[1:-1])}" \$1;', conf["maps.conf"], re.M)
    # /v1/embeddings goes to the version its body's model names (the edge's header), else the default; TorchServe's
    # 404 there is that version not served (404 not_found), or with no version the model not loaded yet (503).
    assert "proxy_pass http://$gw_torchserve/$gw_model_path;" in upstream["/v1/embeddings"]
    assert "error_page 404 = @model_not_served;" in upstream["/v1/embeddings"]
    assert "if ($http_x_gru_encoder_pinned) {\n                return 404 " in upstream["@model_not_served"]
    assert upstream["@model_not_served"].rstrip().splitlines()[-1].lstrip().startswith("return 503 ")
    template = conf["nginx.conf"]
    # Only named headers reach TorchServe: no key under any name, no cookie, nothing large.
    assert "proxy_pass_request_headers off;" in template
    sent = set(re.findall(r"^    proxy_set_header (\S+) ", template, re.M))
    assert sent == {"Connection", "Host", "Content-Type", "Accept", "X-Request-ID", "X-Gru-Encoder-Route", "X-Gru-Encoder-Model",
                    "X-Gru-Encoder-Pinned"}, sent
    assert "limit_req_zone $gw_key_id zone=per_key" in template and "limit_req_status 429;" in template
    assert "keepalive 32;" in template and 'proxy_set_header Connection "";' in template


def test_refusals_run_before_anything_else_at_the_edge(conf: dict[str, str]) -> None:
    """Query strings, bodies that are not JSON and oversized Accept headers are refused in the server's
    rewrite phase (before any location, so before the key check and the proxy), never on its error pages."""
    edge = conf["edge.conf"]
    head = edge[: edge.index("\n        location ")]
    for check in ("if ($gw_query_refused = v1)", "if ($gw_query_refused = native)", "if ($gw_refused = media)", "if ($gw_refused = accept)"):
        assert check in head, check
    assert '"~^/_errors/" "";' in conf["nginx.conf"]
    for status in ("400", "401", "404", "405", "408", "413", "414", "415", "429", "500", "501", "502", "504", "505"):
        assert re.search(rf"^        error_page {status} ", head, re.M), status
    assert "error_page 431 494 =431 @header_too_large;" in head


def test_health_asks_the_model_and_writes_only_under_its_conf_dir(conf: dict[str, str], tmp_path: Path) -> None:
    probe = locations(conf["edge.conf"])["/_probe"]
    assert "proxy_method POST;" in probe and """proxy_set_body '{"texts":["ping"],"return":["hidden"]}';""" in probe
    assert "proxy_pass http://$gw_torchserve/predictions/gru_encoder;" in probe
    assert "auth_request /_probe;" in locations(conf["edge.conf"])["/health"]
    template = TEMPLATE.read_text()
    paths = re.findall(r"^\s*(?:pid|\w+_temp_path|listen unix:)\s*(\S+?);?$", template, re.M)
    assert paths and all(p.startswith("@@CONF_DIR@@/") for p in paths), paths
    assert not re.search(r"^\s*user\s", template, re.M)  # no `user`: the master itself is not root in the image


def test_routes_without_a_key_are_rate_limited_per_address_and_say_so(conf: dict[str, str]) -> None:
    """/ping and /health need no key: each has a per-address limit, and its 429 names that limit, not a key's."""
    edge = locations(conf["edge.conf"])
    for route, zone in (("/ping", "per_address"), ("/health", "health")):
        assert f"limit_req zone={zone} " in edge[route], route
        assert "error_page 429 @address_rate_limited;" in edge[route], route
        assert 'if ($gw_key_id = "")' not in edge[route]
    assert "this address" in edge["@address_rate_limited"] and "API key" not in edge["@address_rate_limited"]


def test_a_route_added_to_the_table_reaches_the_gateway_the_openapi_document_and_the_client() -> None:
    new = Route("/v1/rerank", ("POST",), OPENAI, "rerank", True, KEYED, "rerank", "Rerank texts", "EmbeddingsRequest",
                "EmbeddingsResponse")
    routes = (*ROUTES, new)
    files = render_all(routes)
    assert "/v1/rerank rerank;" in files["maps.conf"] and '/v1/rerank "POST";' in files["maps.conf"]
    edge, upstream = locations(files["edge.conf"]), locations(files["upstream-server.conf"])
    assert "proxy_pass http://gateway_upstream_server/v1/rerank;" in edge["/v1/rerank"]
    assert 'if ($gw_key_id = "")' in edge["/v1/rerank"] and "/v1/rerank" in upstream
    assert "POST /v1/rerank" in edge["@not_found"]  # the 404 lists it, in both shapes
    assert "/v1/rerank" in openapi_document(routes)["paths"] and "/v1/rerank" not in openapi_document()["paths"]
    assert path_of("rerank", routes) == "/v1/rerank"
    # And nothing of it in what the table serves today.
    assert "/v1/rerank" not in "".join(render_all().values())


def test_without_keys_every_caller_is_the_local_key(tmp_path: Path) -> None:
    result = render(tmp_path, {"GATEWAY_AUTH": "off"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "conf" / "keys.map").read_text() == 'default "local";\n'
    assert "no API keys (GATEWAY_AUTH=off)" in result.stderr
    with_keys = render(tmp_path / "keyed", {"GATEWAY_API_KEYS": KEY_A})
    assert with_keys.returncode == 0 and (tmp_path / "keyed" / "conf" / "keys.map").read_text().startswith('default "";\n')


def test_torchserve_is_resolved_once_by_default_with_kept_alive_connections(tmp_path: Path) -> None:
    result = render(tmp_path, {"GATEWAY_API_KEYS": KEY_A})
    assert result.returncode == 0, result.stderr
    upstream = (tmp_path / "conf" / "upstream.conf").read_text()
    assert "upstream torchserve {" in upstream and "keepalive 32;" in upstream and "resolver" not in upstream
    # $gw_torchserve names the upstream block: nginx looks a proxy_pass variable up among its blocks first.
    assert re.search(r'map "" \$gw_torchserve \{\s+default torchserve;\s+\}', upstream)
    assert "(resolved once" in result.stderr
    # The template includes it, and every proxy_pass to TorchServe goes through the variable.
    template = TEMPLATE.read_text()
    assert "include @@CONF_DIR@@/upstream.conf;" in template
    targets = re.findall(r"proxy_pass (\S+);", template + "".join((GENERATED / name).read_text() for name in FILES))
    assert targets and all(t.startswith(("http://$gw_torchserve/", "http://gateway_upstream_server/")) for t in targets), targets
    assert "upstream torchserve {" not in template


@pytest.mark.parametrize(("resolv_conf", "resolver"), [
    ("search x.svc.cluster.local\nnameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5\n", "10.96.0.10"),
    ("nameserver 127.0.0.11\noptions ndots:0\n", "127.0.0.11"),
    ("nameserver fd00::a\n", "[fd00::a]"),
])
def test_re_resolving_takes_the_nameserver_from_resolv_conf(tmp_path: Path, resolv_conf: str, resolver: str) -> None:
    (tmp_path / "resolv.conf").write_text(resolv_conf)
    result = render(tmp_path, {"GATEWAY_API_KEYS": KEY_A, "GATEWAY_RESOLVER_VALID": "2s",
                               "GATEWAY_UPSTREAM": "gru-encoder-torchserve.ns.svc.cluster.local:8080",
                               "GATEWAY_RESOLV_CONF": str(tmp_path / "resolv.conf")})
    assert result.returncode == 0, result.stderr
    upstream = (tmp_path / "conf" / "upstream.conf").read_text()
    assert f"resolver {resolver} valid=2s;" in upstream and "upstream torchserve" not in upstream
    assert re.search(r'default gru-encoder-torchserve\.ns\.svc\.cluster\.local:8080;', upstream)
    assert f"re-resolved every 2s via {resolver}" in result.stderr


@pytest.mark.parametrize(("env", "resolv_conf", "message"), [
    ({"GATEWAY_RESOLVER_VALID": "2 s"}, "nameserver 127.0.0.11\n", "GATEWAY_RESOLVER_VALID='2 s' is not valid"),
    ({"GATEWAY_RESOLVER_VALID": "-1"}, "nameserver 127.0.0.11\n", "GATEWAY_RESOLVER_VALID='-1' is not valid"),
    ({"GATEWAY_RESOLVER_VALID": "5s"}, "search local\n", "names no nameserver"),
])
def test_bad_resolver_settings_are_refused(tmp_path: Path, env: dict[str, str], resolv_conf: str, message: str) -> None:
    (tmp_path / "resolv.conf").write_text(resolv_conf)
    result = render(tmp_path, {"GATEWAY_API_KEYS": KEY_A, "GATEWAY_RESOLV_CONF": str(tmp_path / "resolv.conf"), **env})
    assert result.returncode == 1 and message in result.stderr, result.stderr


def test_the_entrypoint_checks_release_lines_with_the_release_modules_own_pattern() -> None:
    assert f"RELEASE_LINE='{release_conf.LINE}'" in (GATEWAY / "entrypoint.sh").read_text()


def test_the_release_file_is_rendered_and_one_with_a_foreign_line_is_ignored(tmp_path: Path) -> None:
    release = tmp_path / "gateway.conf"
    release.write_text(release_conf.release_conf("1.0", "2.0", 25, 7))
    env = {"GATEWAY_AUTH": "off", "GATEWAY_RELEASE_FILE": str(release)}
    assert render(tmp_path / "a", env).returncode == 0
    assert (tmp_path / "a" / "conf" / "release.conf").read_text() == release.read_text()
    assert "include @@CONF_DIR@@/release.conf;".replace("@@CONF_DIR@@", str(tmp_path / "a" / "conf")) in \
        (tmp_path / "a" / "conf" / "nginx.conf").read_text()
    missing = render(tmp_path / "b", {**env, "GATEWAY_RELEASE_FILE": str(tmp_path / "none")})
    assert missing.returncode == 0
    fallback = (tmp_path / "b" / "conf" / "release.conf").read_text()
    assert 'map "" $gw_unpinned_version {\n    default "";\n}' in fallback and not release_conf.bad_lines(fallback)
    release.write_text(release.read_text() + "include /etc/passwd;\n")
    bad = render(tmp_path / "c", env)
    assert bad.returncode == 0, "a bad release file never stops the gateway"
    assert f"{release} has lines that are not a release's (line {len(release.read_text().splitlines())})" in bad.stderr
    assert (tmp_path / "c" / "conf" / "release.conf").read_text() == fallback.replace(str(tmp_path / "none"), str(release))


@pytest.mark.parametrize("text", ['map "" $gw_unpinned_version {\n    default "2.0"; include x;\n}\n', "server { }\n",
                                  'split_clients "$remote_addr" $gw_unpinned_version {\n'])
def test_a_release_line_can_only_choose_versions(text: str) -> None:
    assert release_conf.bad_lines(text)


@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(), reason="nginx not installed (make nginx)")
def test_nginx_accepts_the_gateway_with_a_canary(tmp_path: Path) -> None:
    release = tmp_path / "gateway.conf"
    release.write_text(release_conf.release_conf("1.0", "2.0", 2.5, 3))
    env = {"GATEWAY_AUTH": "off", "GATEWAY_RELEASE_FILE": str(release), "GATEWAY_LISTEN": "127.0.0.1:1", "GATEWAY_UPSTREAM": "127.0.0.1:2",
           "GATEWAY_STATUS_LISTEN": f"unix:{tmp_path / 's.sock'}", "PATH": os.environ["PATH"] + ":/usr/sbin"}
    assert render(tmp_path, env).returncode == 0
    checked = subprocess.run(["nginx", "-t", "-q", "-c", str(tmp_path / "conf" / "nginx.conf"), "-e", "stderr"],
                             capture_output=True, text=True, env={**os.environ, **env}, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_a_pin_in_the_path_to_a_version_the_release_does_not_list_is_answered_at_the_edge(conf: dict[str, str]) -> None:
    edge = conf["edge.conf"]
    pinned = edge[edge.index('location ~ "^/predictions/gru_encoder/'):]
    pinned = pinned[: pinned.index("\n        }\n")]
    assert 'if ($gw_target_served = "") {\n                return 404 \'{"code":404,"type":"not_found","message":"version $gw_version' in pinned
    assert pinned.index("return 401") < pinned.index("gw_target_served"), "a caller without a key learns nothing"
    embeddings = edge[edge.index("location = /v1/embeddings"):]
    assert "gw_target_served" not in embeddings[: embeddings.index("\n        }\n")], "its body is not read when `if` runs"


def test_the_canary_reads_the_caller_id_the_client_sends() -> None:
    from gru_encoder.api.routes import CALLER_HEADER, CALLER_ID_PATTERN

    template = TEMPLATE.read_text()
    assert f'"$gw_key_id|$http_{CALLER_HEADER.lower().replace("-", "_")}" $gw_caller' in template
    assert f"(?<gw_caller_id>{CALLER_ID_PATTERN})$" in template
