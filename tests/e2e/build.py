"""The images under test: the served run archived into a store inside the build context (never the
developer's model_store/gru_encoder.mar), then `compose build` through scripts/stage-build.sh, as `make
up-cpu` builds (the machine's torch wheel and certificate authorities staged for the build, removed after)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from tests import ROOT
from tests.e2e.project import IMAGES, STORE, Project, run
from tests.e2e.report import Report

STAGE_BUILD = ROOT / "scripts" / "stage-build.sh"
LOADTEST_ENV = "COMPOSE_TEST_LOADTEST"  # 0 skips the Locust image and test


def loadtest_on() -> bool:
    return os.environ.get(LOADTEST_ENV, "1") != "0"


def archive(run_dir: Path, report: Report) -> Path:
    """`python -m training.archive` of the run into model_store/.compose-test, readable by all (the
    container's unprivileged user reads the mounted store)."""
    store = ROOT / STORE
    shutil.rmtree(store, ignore_errors=True)
    result = run([sys.executable, "-m", "training.archive", "--run-dir", str(run_dir), "--export-path", str(store)],
                 timeout=300)
    report.note((result.stdout.strip().splitlines() or [""])[-1])
    for folder, dirs, files in os.walk(store):
        for name in [*dirs, *files]:
            path = Path(folder, name)
            path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))
    store.chmod(store.stat().st_mode | 0o555)
    return store


def remove_store() -> None:
    shutil.rmtree(ROOT / STORE, ignore_errors=True)


def build(project: Project, run_dir: Path, report: Report) -> None:
    archive(run_dir, report)
    project.settings.update(MODEL_STORE=f"./{STORE}", MAR=f"{STORE}/gru_encoder.mar",
                            BASE_IMAGE=os.environ.get("BASE_IMAGE", "debian:bookworm-slim"))
    services = ["torchserve", "gateway", "prometheus", *(["locust-master"] if loadtest_on() else [])]
    result = run([str(STAGE_BUILD), "--cpu", *project.compose_command("build", *project.build_flags(), *services)],
                 timeout=1800, env=project.env)
    shown = re.compile(r"^stage-build: |torch [0-9.]+.* cuda |Successfully tagged|naming to")
    log = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # the build's colours
    report.note("\n".join(line for line in log.splitlines() if shown.search(line)))
    listing = project.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}  {{.Size}}").stdout.splitlines()
    report.note("\n".join(line for line in listing if line.split("  ")[0] in IMAGES.values()))
