"""Print the pinned requirements of pyproject.toml extras, the project's own extras expanded.

    python3 docker/extra-pins.py pyproject.toml serve        # core's and serve's pins, one line

The Dockerfiles install these by name before the project itself, so the dependency layer stays cached
while only the code changes, and every pin lives in pyproject.toml alone.
"""

import re
import sys
import tomllib


def pins(project: dict, extras: list[str], seen: set[str] | None = None) -> list[str]:
    seen = set() if seen is None else seen
    out: list[str] = []
    for extra in extras:
        if extra in seen:
            continue
        seen.add(extra)
        for req in project["optional-dependencies"][extra]:
            req = req.split("#")[0].strip()
            own = re.fullmatch(re.escape(project["name"]) + r"\[([\w,-]+)\]", req)
            out += pins(project, own.group(1).split(","), seen) if own else [req]
    return list(dict.fromkeys(project.get("dependencies", []) + out))


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        print(" ".join(pins(tomllib.load(f)["project"], sys.argv[2:])))
