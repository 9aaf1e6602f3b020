"""The gateway refuses to start without a usable API key, saying why (its image alone, no network):
a gateway without keys would be an open door."""

from __future__ import annotations

import pytest

from tests.e2e.project import IMAGES, Project
from tests.e2e.report import Report

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]

# 44 characters, like secrets.token_urlsafe(32), but with a quote, which no key may hold.
QUOTED_KEY = 'abcdefghijklmnopqrstu"vwxyzabcdefghijklmnopq'


@pytest.mark.parametrize("what, env", [
    ("no key", {}),
    ("GATEWAY_API_KEYS=short-key", {"GATEWAY_API_KEYS": "short-key"}),
    ("a 44-character key with a quote in it", {"GATEWAY_API_KEYS": QUOTED_KEY}),
], ids=["no-key", "short-key", "quote-in-key"])
def test_gateway_refuses_to_start_without_a_usable_key(what: str, env: dict[str, str], project: Project,
                                                       report: Report) -> None:
    options = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    result = project.docker("run", "--rm", "--network", "none", *options, IMAGES["GATEWAY_IMAGE"],
                            timeout=60, check=False)
    out = (result.stdout + result.stderr).strip()
    report.promise(f"{what} -> exit code {result.returncode}: {out}")
    assert result.returncode != 0, f"the gateway started ({what})"
    assert any(line.startswith("gateway: refusing to start: ") for line in out.splitlines()), \
        f"no clear message ({what}): {out}"
