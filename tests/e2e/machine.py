"""What is particular to the machine the compose test runs on, kept apart from the test itself:
scripts/docker-bootstrap.sh (Docker installed and answering, the base image), stopping a dockerd it
started, and the build inputs this machine has on disk (a torch CPU wheel, local certificate
authorities), staged into the build context for one build and removed after it."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import ROOT
from tests.e2e.report import Report

BOOTSTRAP = ROOT / "scripts" / "docker-bootstrap.sh"
WHEELS = ROOT / "docker" / "wheels"
CA_DIR = ROOT / "docker" / "ca-certificates"
LOCAL_WHEELS = "/opt/wheels"
LOCAL_CAS = "/usr/local/share/ca-certificates"


def bootstrap(report: Report) -> int | None:
    """Run the bootstrap, its announcements straight to the terminal; the pid of a dockerd it started."""
    problem = ""
    with report.uncaptured():
        try:
            # Installing packages or debootstrapping the base image takes minutes on a bare machine.
            result = subprocess.run(["bash", str(BOOTSTRAP)], stdout=subprocess.PIPE, text=True, timeout=1800)
            stdout = result.stdout
            if result.returncode != 0:
                problem = f"failed (exit status {result.returncode}): its message is above"
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout or ""
            problem = f"still running after {exc.timeout:.0f} s"
    started = _started_dockerd(stdout)
    if problem:
        if started:  # the caller of a failed bootstrap has no stack to take down first
            stop_dockerd(started, report)
        pytest.fail(f"{BOOTSTRAP.relative_to(ROOT)} {problem}", pytrace=False)
    return started


def _started_dockerd(stdout: str | bytes) -> int | None:
    """The bootstrap's answer: `STARTED_DOCKERD=<pid>`, or `STARTED_DOCKERD=` when dockerd was already up."""
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    for line in text.splitlines():
        if line.startswith("STARTED_DOCKERD="):
            pid = line.split("=", 1)[1].strip()
            return int(pid) if pid.isdigit() else None
    return None


def stop_dockerd(pid: int, report: Report, wait_s: float = 30) -> None:
    """SIGTERM to the dockerd the bootstrap started (it stops its containerd too), and wait for it."""
    report.terminal(f"[e2e] stopping the dockerd the bootstrap started (pid {pid})")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    report.terminal(f"[e2e] dockerd (pid {pid}) still running {wait_s:.0f} s after SIGTERM: left running")


def torch_pin() -> str:
    """The torch version pinned in pyproject.toml (the one every image and the venv use), wherever it
    is listed: the dependencies or an extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lists = [project.get("dependencies", []), *project.get("optional-dependencies", {}).values()]
    pins = [req.split("#")[0].strip() for reqs in lists for req in reqs]
    return next(pin.split("==", 1)[1] for pin in pins if pin.startswith("torch=="))


@contextlib.contextmanager
def staged_build_inputs(report: Report) -> Iterator[dict[str, str]]:
    """This machine's torch CPU wheel (TORCH_WHEEL_FILE, else /opt/wheels) into docker/wheels/, and its
    local certificate authorities into docker/ca-certificates/, for one build; yields the build's
    settings (TORCH_WHEEL) and removes what it put there afterwards, also on failure. Files already in
    those folders are the developer's: used, never removed."""
    staged: list[Path] = []
    settings: dict[str, str] = {}
    try:
        pin = torch_pin()
        wheel = os.environ.get("TORCH_WHEEL_FILE") or next(iter(sorted(glob.glob(f"{LOCAL_WHEELS}/torch-{pin}+cpu-*.whl"))), "")
        if wheel:
            if not Path(wheel).is_file():
                pytest.fail(f"TORCH_WHEEL_FILE={wheel}: no such file (a torch CPU wheel, or unset for PyTorch's CPU index)",
                            pytrace=False)
            target = WHEELS / Path(wheel).name
            if not target.exists():
                report.terminal(f"[e2e] staging {wheel} into {WHEELS.relative_to(ROOT)}/: the build installs this machine's "
                                "torch wheel instead of downloading it (removed after the build)")
                _link_or_copy(Path(wheel), target)
                staged.append(target)
            settings["TORCH_WHEEL"] = target.name
            report.note(f"torch: the local wheel {wheel}")
        else:
            report.note(f"torch: {pin} from PyTorch's CPU index (no local wheel in {LOCAL_WHEELS})")
        # pip in the build trusts what this machine trusts (a proxy that re-signs TLS brings its own
        # authority); the Dockerfiles use them in their build stages only.
        for crt in sorted(glob.glob(f"{LOCAL_CAS}/*.crt")):
            target = CA_DIR / Path(crt).name
            if not target.exists():
                report.terminal(f"[e2e] staging {crt} into {CA_DIR.relative_to(ROOT)}/: the build's pip trusts this "
                                "machine's certificate authorities (removed after the build)")
                shutil.copyfile(crt, target)
                staged.append(target)
        yield settings
    finally:
        for path in staged:
            path.unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # instant, no second copy of a ~200 MB wheel
    except OSError:  # another filesystem
        shutil.copyfile(source, target)
