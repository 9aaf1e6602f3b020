"""A release under load on a real TorchServe behind make serve's local gateway (loadtests/release_sequence.py):
pinned-1.0, pinned-2.0 and unpinned callers at 25 requests/s each while `gru-encoder models` adds 2.0,
canaries it to 25% of the unpinned callers, is refused and then forced to promote it, rolls back and
retires it. No pinned caller of a served version sees a failure or another version; the canary picks a
quarter of 1,000 callers and keeps each on one side; promote and rollback move every unpinned caller.

1.0 is the shipped run (runs/default), 2.0 the smoke run (BLEU near 0, so the gate refuses it). About two
minutes, most of it the canary's hold: every one of the 1,000 callers is seen twice.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from loadtests.release_sequence import (
    Drive,
    Record,
    ReleaseConfig,
    cli_location,
    drive,
    report,
    settings_file,
    table,
)
from loadtests.torchserve_process import TorchServe
from tests import ROOT
from training.archive import ArchiveConfig, build_archive

pytestmark = pytest.mark.slow
CALLERS = 1000


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory, smoke_run: Path) -> tuple[ReleaseConfig, Drive, dict]:
    store = tmp_path_factory.mktemp("release_store")
    build_archive(ArchiveConfig(run_dir=str(ROOT / "runs" / "default"), export_path=str(store)))
    ts = TorchServe(store, tmp_path_factory.mktemp("release_ts"), gateway="local", workers=1).start()
    try:
        # The launcher's settings file, as make serve's: the CLI finds the server there, and the gateway's
        # status socket, so that a command returns once the gateway runs the change.
        cfg = ReleaseConfig(url=ts.url, run=str(smoke_run), callers=CALLERS, hold_s=2.0, warmup_s=2.0,
                            settings=str(settings_file(ts)))
        done = drive(cfg, ts.url, cli_location(cfg))
    finally:
        ts.stop()
    result = report(cfg, done)
    print(table(result))
    return cfg, done, result


def step(done: Drive, name: str):
    return next(s for s in done.ran if s.step.name == name)


def held(done: Drive, name: str, group: str = "unpinned") -> list[Record]:
    """The group's requests sent in the step's hold (after its command returned)."""
    s = step(done, name)
    return [r for r in done.records if r.group == group and s.changed <= r.t < s.t1]


def test_pinned_callers_of_a_served_version_never_fail(released: tuple[ReleaseConfig, Drive, dict]) -> None:
    _, done, _ = released
    retire = next(s for s in done.ran if s.step.argv[:1] == ("retire",) and s.exit == 0)  # 2.0 served until then
    one = [r for r in done.records if r.group == "pinned-1.0" and r.t >= done.ran[0].t0]
    two = [r for r in done.records if r.group == "pinned-2.0" and r.t < retire.t0]
    assert len(one) > 2000 and len(two) > 1500
    for r in one + two:
        pin = r.group.removeprefix("pinned-")
        assert (r.status, r.version, r.body_version) == (200, pin, pin), r
    unpinned = [r for r in done.records if r.group == "unpinned" and r.t >= done.ran[0].t0]
    assert all(r.status == 200 and r.version == r.body_version for r in unpinned), [r for r in unpinned if r.status != 200][:3]


def test_every_group_kept_its_rate(released: tuple[ReleaseConfig, Drive, dict]) -> None:
    _, _, result = released
    rates = {(st["step"], g): f["rate"] for st in result["steps"] for g, f in st["groups"].items() if "(retir" not in g}
    assert len(rates) == 8 * 2 + 6  # pinned-2.0 from add's hold on; retire --force's apart (it ends 2.0)
    assert min(rates.values()) >= 20, rates


def test_the_canary_moves_a_quarter_of_the_callers_and_each_stays(released: tuple[ReleaseConfig, Drive, dict]) -> None:
    cfg, done, result = released
    assert step(done, "canary").exit == 0, step(done, "canary").output
    seen: dict[str, set] = defaultdict(set)
    visits: dict[str, int] = defaultdict(int)
    for r in held(done, "canary") + held(done, "promote (gated)"):  # a refused promote leaves the canary on
        seen[r.caller].add(r.version)
        visits[r.caller] += 1
    assert len(seen) == CALLERS and min(visits.values()) >= cfg.canary_visits
    assert all(len(v) == 1 for v in seen.values()), {c: v for c, v in seen.items() if len(v) > 1}
    share = 100 * sum(v == {"2.0"} for v in seen.values()) / len(seen)
    assert abs(share - 25) <= 5, share
    assert result["canary"]["share_pct"] == round(share, 1) and result["canary"]["callers_with_two_versions"] == 0
    # The pinned groups send the same caller ids: a quarter of them are the canary's, and stay pinned.
    for group in ("pinned-1.0", "pinned-2.0"):
        answers = {r.version for r in held(done, "canary", group)}
        assert answers == {group.removeprefix("pinned-")}, (group, answers)


def test_promote_is_refused_by_the_gate_then_forced_and_rolled_back(released: tuple[ReleaseConfig, Drive, dict]) -> None:
    _, done, _ = released
    gated = step(done, "promote (gated)")
    assert gated.exit == 1 and "held-out BLEU 0.00 is 30.29 below the default 1.0's 30.29" in gated.output
    assert step(done, "promote --force").exit == 0 and step(done, "rollback").exit == 0
    for name, version in (("promote --force", "2.0"), ("rollback", "1.0"), ("retire --force", "1.0")):
        answers = held(done, name)
        assert len(answers) >= 40 and {r.version for r in answers} == {version}, (name, [r.version for r in answers])


def test_retire_is_refused_while_pinned_then_forced(released: tuple[ReleaseConfig, Drive, dict]) -> None:
    _, done, _ = released
    refused = step(done, "retire (pinned)")
    assert refused.exit == 1 and "--force" in refused.output, refused.output
    assert step(done, "retire --force").exit == 0
    after = held(done, "retire --force", "pinned-2.0")
    assert len(after) >= 40
    for r in after:
        assert r.status == 404 and '"type":"not_found"' in r.detail and "version 2.0 is not served" in r.detail, r
        assert "GET /info lists the served versions" in r.detail


def test_the_report_passes(released: tuple[ReleaseConfig, Drive, dict]) -> None:
    _, _, result = released
    assert [c for c in result["checks"] if not c["ok"]] == []
    assert result["ok"] and "FAIL" not in table(result)
