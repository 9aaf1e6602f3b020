"""Which version answers an unpinned request: the gateway's release file, rendered from the served versions.

The gateway (docker/gateway/nginx.conf.template) includes this file as release.conf. It defines
$gw_unpinned_version: the default version, or, during a canary, the canary version for its share of callers;
$gw_target_served: "1" for a version the gateway may send a request to (the state's versions), so that a pin
to any other is a 404 at the gateway's edge, never a request to a replica that is loading it or unloading
it; and $gw_release_generation, the state's generation, which the gateway's status server answers on GET
/release (so that `gru-encoder models` knows when nginx runs the new release).
nginx's split_clients hashes the caller ($gw_caller: the API key's fingerprint where keys are on, else the
caller's X-Caller-ID, else its address) with MurmurHash2, so a caller lands on the same side for as long as
the percentage stays the same: one caller never gets vectors of two versions mixed while it builds an index.

`gru-encoder models` writes the file beside versions.json at every change (host/versions.py); the gateway's
entrypoint checks every line of it against LINE below before nginx reads it, and reloads nginx when it
changes. No file (no versions.json): every unpinned request goes to TorchServe's own default.
Standard library only: the handler's floor, imported by the launcher and the CLI.
"""

from __future__ import annotations

import re
from typing import Sequence

from gru_encoder.api.routes import VERSION_PATTERN

RELEASE_DIR = "release"  # under the model store; the gateway mounts it (compose: /etc/gateway/release)
RELEASE_FILE = "gateway.conf"
VARIABLE = "$gw_unpinned_version"
CALLER = "$gw_caller"
SERVED = "$gw_target_served"
GENERATION = "$gw_release_generation"
# Every line the gateway accepts (docker/gateway/entrypoint.sh checks the file with this same pattern):
# a comment, the map or split_clients opening, an entry "<percent>% <version>;" / "* <version>;" /
# "default <version>;" (a version of VERSION_PATTERN, or "" for TorchServe's default), or "}".
LINE = (r'^(#.*|map "" \$gw_(unpinned_version|release_generation|target_served) \{|split_clients "\$gw_caller" \$gw_unpinned_version \{'
        r'|map \$gw_target_version \$gw_target_served \{'
        rf'|    ([0-9]{{1,3}}(\.[0-9]{{1,2}})?%|\*|default|"{VERSION_PATTERN}"|"") ("{VERSION_PATTERN}"|"");|\}}|)$')
_LINE = re.compile(LINE)


def percent_text(percent: float) -> str:
    """nginx's split_clients reads at most two decimals: 25 -> "25", 2.5 -> "2.5"."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent {percent}: between 0 and 100")
    return f"{percent:.2f}".rstrip("0").rstrip(".")


def release_conf(default: str | None, canary: str | None = None, percent: float = 0.0, generation: int = 0,
                 served: Sequence[str] | None = None) -> str:
    """The release file: unpinned callers on `default` ("" or None: TorchServe's default), `percent` of them
    on `canary` (sticky per caller); requests only to the `served` versions (None: any, TorchServe decides)."""
    share = percent_text(percent) if canary else "0"
    head = [f"# Rendered from versions.json by gru-encoder models (generation {generation}): do not edit.",
            f"# Unpinned requests: default {default or '(TorchServe default)'}"
            + (f", {share}% of callers on the canary {canary}." if canary and share != "0" else ", no canary.")]
    if not canary or share == "0":
        body = [f'map "" {VARIABLE} {{', f'    default "{default or ""}";', "}"]
    elif share == "100":
        body = [f'map "" {VARIABLE} {{', f'    default "{canary}";', "}"]
    else:
        body = [f'split_clients "{CALLER}" {VARIABLE} {{', f'    {share}% "{canary}";', f'    * "{default or ""}";', "}"]
    if served is None:
        body += [f'map "" {SERVED} {{', '    default "1";', "}"]
    else:  # "": a route that names no version (/info, /v1/models)
        body += [f"map $gw_target_version {SERVED} {{", '    "" "1";', *(f'    "{v}" "1";' for v in served), '    default "";', "}"]
    body += [f'map "" {GENERATION} {{', f'    default "{int(generation)}";', "}"]
    text = "\n".join(head + body) + "\n"
    assert not bad_lines(text), bad_lines(text)
    return text


def routing(text: str) -> str:
    """A release file's text without its comments and generation: two files route the same when these are equal."""
    text = re.sub(r'map "" \$gw_release_generation \{\n    default "[0-9]+";\n\}\n', "", text)
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))


def generation_of(text: str) -> int | None:
    """The generation a release file names (None: none)."""
    found = re.search(r'map "" \$gw_release_generation \{\n    default "([0-9]+)";', text)
    return int(found.group(1)) if found else None


def bad_lines(text: str) -> list[int]:
    """The 1-based numbers of the lines the gateway would refuse."""
    return [n for n, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1)
            if not _LINE.fullmatch(line)]
