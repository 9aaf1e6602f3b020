"""Resident memory of TorchServe's workers per served version: one version served, then two.

    .venv/bin/python -m loadtests.version_memory                  # 1.0 and 2.0 both runs/default, 1 worker each, 3 rounds
    .venv/bin/python -m loadtests.version_memory --run2 runs/smoke --workers 2 --rounds 1   # after training.train --smoke

Each round starts a real server as `make serve` does (loadtests.torchserve_process, the local gateway in
front, so registration is on) with version 1.0 of --run, warms it, measures; then adds version 2.0 of
--run2 with `gru-encoder models add` (its checks included), warms both, measures again; then stops.
TorchServe's management API (GET /models/gru_encoder/all) names each version's worker pids; psutil reads
each one's RSS, PSS and USS (/proc/<pid>/smaps_rollup). RSS counts the pages a worker shares with the
others (Python, torch's libraries) in full in each; PSS divides them among their sharers, so it sums to
the machine's; USS is the worker's own pages: what stopping it would free. The Java frontend is one
process for every version, measured beside; the total is the frontend's and the workers' (the launcher
and nginx do not change with the versions).

The default --run2 is the shipped run again: a second version of the same architecture costs what the
first does (the smoke run's 32 hidden units would understate it). Warm-up: requests of 16 texts of up to
40 words to each version, so that the figures include what a worker keeps after answering.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

from gru_encoder.host import models_cli
from gru_encoder.host.versions import MODEL_NAME
from loadtests.torchserve_process import ROOT, TorchServe
from training.archive import ArchiveConfig, build_archive

MIB = 1024 * 1024
WARM_TEXTS = [" ".join(["he is very tall and she is not , i think ."] * (1 + i % 4)) for i in range(16)]  # 10-40 words


@dataclass(frozen=True)
class Row:
    served: int  # versions served when measured
    what: str  # a version's workers, the frontend, or their total
    pids: tuple[int, ...]
    rss: float  # MiB, summed over the processes
    pss: float | None
    uss: float | None


def worker_pids(management_url: str) -> dict[str, list[int]]:
    """{version: its workers' pids} from TorchServe's management API."""
    models = requests.get(f"{management_url}/models/{MODEL_NAME}/all", timeout=30).json()
    return {m["modelVersion"]: [w["pid"] for w in m["workers"]] for m in models}


def memory(pids: list[int]) -> tuple[float, float | None, float | None]:
    """(RSS, PSS, USS) in MiB summed over the processes; PSS and USS None where the kernel does not say."""
    rss, pss, uss = 0.0, 0.0, 0.0
    full = True
    for pid in pids:
        proc = psutil.Process(pid)
        try:
            info = proc.memory_full_info()
            pss += getattr(info, "pss", float("nan"))
            uss += info.uss
        except psutil.AccessDenied:
            full = False
            info = proc.memory_info()
        rss += info.rss
    return rss / MIB, pss / MIB if full else None, uss / MIB if full else None


def warm(ts: TorchServe, version: str, requests_n: int) -> None:
    """Answered requests of 16 texts to one version (TorchServe itself, its pinned path)."""
    with requests.Session() as s:
        for _ in range(requests_n):
            r = s.post(f"{ts.torchserve_url}/predictions/{MODEL_NAME}/{version}", json={"texts": WARM_TEXTS}, timeout=60)
            assert r.status_code == 200, r.text[:300]


def measure(ts: TorchServe, served: int) -> list[Row]:
    """A row per served version's workers, then TorchServe's Java frontend (one for every version), then their total."""
    rows = []
    frontend = None
    for version, pids in sorted(worker_pids(ts.management_url).items()):
        rows.append(Row(served, f"workers of {version}", tuple(pids), *memory(pids)))
        frontend = psutil.Process(pids[0]).parent()  # TorchServe's frontend starts every worker
    assert frontend is not None and "java" in frontend.name(), frontend
    rows.append(Row(served, "Java frontend", (frontend.pid,), *memory([frontend.pid])))
    every = tuple(pid for row in rows for pid in row.pids)
    rows.append(Row(served, "total", every, *memory(list(every))))
    return rows


def one_round(run: Path, run2: Path, workers: int, warm_n: int) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="version_memory_") as tmp:
        work = Path(tmp)
        store = work / "model_store"
        build_archive(ArchiveConfig(run_dir=str(run), export_path=str(store)))
        ts = TorchServe(store, work / "torchserve", gateway="local", workers=workers).start()
        try:
            warm(ts, "1.0", warm_n)
            one = measure(ts, 1)
            code = models_cli.main(["models", "--settings", "/nonexistent", "--management-url", ts.management_url,
                                    "--inference-url", ts.torchserve_url, "--model-store", str(store),
                                    "add", str(run2), "--version", "2.0", "--workers", str(workers)])
            assert code == 0, "gru-encoder models add failed (its message is above)"
            for version in ("1.0", "2.0"):
                warm(ts, version, warm_n)
            return one + measure(ts, 2)
        finally:
            ts.stop()


def fmt(values: list[float | None], digits: int = 0) -> str:
    """The median, and the spread (min-max) when several rounds gave it; n/a where the kernel did not say."""
    if any(v is None for v in values):
        return "n/a"
    xs = [float(v) for v in values if v is not None]
    mid = f"{statistics.median(xs):.{digits}f}"
    return mid if len(xs) == 1 else f"{mid} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "default", help="version 1.0's run folder")
    parser.add_argument("--run2", type=Path, default=ROOT / "runs" / "default", help="version 2.0's run folder")
    parser.add_argument("--workers", type=int, default=1, help="TorchServe workers per version")
    parser.add_argument("--warm", type=int, default=20, help="requests of 16 texts to each version before measuring")
    parser.add_argument("--rounds", type=int, default=3, help="fresh servers measured, one after the other")
    args = parser.parse_args(argv)
    rounds = []
    for r in range(args.rounds):
        rows = one_round(args.run, args.run2, args.workers, args.warm)
        rounds.append(rows)
        for row in rows:
            print(f"round {r + 1}: {row.served} served, {row.what} (pids {list(row.pids)}): RSS {row.rss:.1f} MiB, "
                  f"PSS {fmt([row.pss], 1)} MiB, USS {fmt([row.uss], 1)} MiB", flush=True)
    print(f"\nMiB, {args.workers} worker(s) per version, median (min-max) of {args.rounds} round(s):\n")
    print("| versions served | process | RSS | PSS | USS |")
    print("|---|---|---|---|---|")
    for i, row in enumerate(rounds[0]):
        got = [rows[i] for rows in rounds]
        note = " (RSS: shared pages counted in each process)" if row.what == "total" else ""
        print(f"| {row.served} | {row.what}{note} | {fmt([g.rss for g in got])} | {fmt([g.pss for g in got])} | "
              f"{fmt([g.uss for g in got])} |")
    second = [next(x.pss for x in rows if (x.served, x.what) == (2, "total")) - next(x.pss for x in rows if (x.served, x.what) == (1, "total"))
              if all(x.pss is not None for x in rows) else None for rows in rounds]
    print(f"\nThe second version's cost (total PSS with 2 served minus with 1): {fmt(second)} MiB")

if __name__ == "__main__":
    main()
