"""The bench's CPU accounting (loadtests/cpu.py, psutil) against what the kernel reports to the process itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from loadtests.cpu import Sampler, machine_busy_s, process_cpu_s, role, tree

# A child that spins until it has spent 0.6 s of CPU in a grandchild, then in itself, prints both, and idles.
BURN = """
import subprocess, sys, time
def spin(seconds):
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
grandchild = subprocess.Popen([sys.executable, "-c", "import time\\nstart = time.process_time()\\nwhile time.process_time() - start < 0.6: pass"])
grandchild.wait()
spin(0.6)
print(time.process_time(), flush=True)
time.sleep(30)
"""


def test_sampler_counts_a_tree_s_cpu_including_a_process_that_exited() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURN], stdout=subprocess.PIPE, text=True)
    try:
        with Sampler({"server": child.pid}, interval=0.05) as sampler:
            own_cpu = float(child.stdout.readline())  # the child's own CPU seconds, as its kernel counters say
            time.sleep(0.2)
        measured = sampler.samples[-1].cpu["server.other"] - sampler.samples[0].cpu.get("server.other", 0.0)
        # The grandchild's 0.6 s is kept after it exited (it was sampled while alive, to within one interval);
        # the child's own time is read to the clock tick (10 ms); the interpreter's start-up is in both.
        assert own_cpu + 0.6 - 0.15 <= measured <= own_cpu + 0.6 + 0.05, (measured, own_cpu)
        rates = sampler.rates()
        assert abs(rates["server"] * rates["seconds"] - measured) < 1e-6
        # The machine's busy time (all cores' counters) holds the tree's, and no more than every core's.
        assert rates["server"] * 0.8 <= rates["machine"] <= (os.cpu_count() or 1) * 1.05, rates
    finally:
        child.kill()
        child.wait()


def test_tree_finds_descendants_and_process_cpu_reads_the_kernel_counters() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"])
    try:
        deadline = time.monotonic() + 20
        while len(tree(child.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        family = tree(child.pid)
        assert family[0] == child.pid and len(family) == 2
        assert process_cpu_s(child.pid) is not None and process_cpu_s(2**22 + 1) is None  # no such pid
    finally:
        for pid in reversed(tree(child.pid)):
            subprocess.run(["kill", str(pid)], check=False)
        child.wait()


def test_tree_of_a_gone_process_is_itself_and_role_reads_the_command_line() -> None:
    gone = 2**22 + 1  # above the kernel's pid_max: no such process
    assert tree(gone) == [gone] and role(gone) == "other"
    script = "import time; print('up', flush=True); time.sleep(30)"
    worker = subprocess.Popen([sys.executable, "-c", script, "model_service_worker.py"], stdout=subprocess.PIPE, text=True)
    try:
        worker.stdout.readline()  # running: the kernel has its command line (not yet in the middle of exec)
        assert role(worker.pid) == "worker" and role(os.getpid()) == "other"
    finally:
        worker.kill()
        worker.wait()


def test_machine_busy_time_grows_with_work_and_wall_time_with_the_clock() -> None:
    busy0, wall0 = machine_busy_s()
    start = time.process_time()
    while time.process_time() - start < 0.3:
        pass
    busy1, wall1 = machine_busy_s()
    assert busy1 - busy0 >= 0.3 - 0.05  # at least this process's spin (counters tick every 10 ms)
    assert 0.3 - 0.05 <= wall1 - wall0 and busy1 - busy0 <= (wall1 - wall0) * (os.cpu_count() or 1) + 0.05
