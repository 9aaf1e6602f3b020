"""A replica follows versions.json: each TorchServe registers what a new state adds, unregisters what it
retires and takes its default, so that every replica of a deployment (compose's two, a Swarm service's or a
Kubernetes Deployment's N) serves the same versions without anyone reaching its management API, which
listens on the replica's own loopback only.

The launcher (host/serve.py) runs one Reconciler beside TorchServe. At start TorchServe already loaded every
version of the state (load_models) and the launcher set its default; from then on the reconciler looks at the
state every `interval` seconds and applies each *change* of it (the versions added or removed, the default),
never more: under `make serve`, `gru-encoder models` registers a version itself before it writes the state
(to check its answers first), and a reconciler that unregistered every version missing from the state would
undo that. A change it could not apply (an archive that does not load) is said in the log and tried again at
the next look, so a replica converges once the cause is gone; `gru-encoder models` checks that every replica
did (host/replica_status.py) before the gateway sends callers anywhere new.
"""

from __future__ import annotations

import sys
import threading

from gru_encoder.host import versions
from gru_encoder.host.models_cli import CommandError, Management
from gru_encoder.host.settings import ServingSettings
from gru_encoder.host.versions import State, VersionError

PREFIX = "gru-encoder reconcile:"
RETIRE_GRACE_S = 3.0  # between a version leaving the state and its unregistering here


def apply(management: Management, before: State, after: State, workers: int) -> list[str]:
    """Make TorchServe serve `after`, given it served `before`: what was done, each said in a line."""
    done = []
    registered = management.registered()
    for v in after.versions:
        if v.version not in registered:
            management.register(v.mar, v.workers or workers)
            done.append(f"registered {v.version} ({v.mar})")
    for name in set(before.names()) - set(after.names()):
        if name in registered and name != after.default:
            management.unregister(name)
            done.append(f"unregistered {name}")
    if management.default() != after.default:
        management.set_default(after.default)
        done.append(f"default {after.default}")
    return done


class Reconciler(threading.Thread):
    """Applies each new generation of the store's state to the TorchServe at `management_url`."""

    def __init__(self, settings: ServingSettings, started: State, interval: float = 1.0):
        super().__init__(daemon=True, name="reconcile")
        self.settings, self.applied, self.interval = settings, started, interval
        self.management = Management(f"http://127.0.0.1:{settings.management_port}", timeout=300.0)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                state = versions.load(self.settings.model_store, self.settings.mar)
            except VersionError as e:
                print(f"{PREFIX} {e}: serving as before", file=sys.stderr, flush=True)
                self.stopping.wait(10 * self.interval)
                continue
            if state.generation == self.applied.generation and state.saved == self.applied.saved:
                continue
            if set(self.applied.names()) - set(state.names()):
                # A retired version: the gateways stop sending to it once they load the new release (within a
                # second or two); unregistering it before that would drop the requests still coming.
                if self.stopping.wait(RETIRE_GRACE_S):
                    return
            try:
                for line in apply(self.management, self.applied, state, self.settings.workers):
                    print(f"{PREFIX} generation {state.generation}: {line}", flush=True)
                self.applied = state
            except CommandError as e:  # tried again at the next look
                print(f"{PREFIX} generation {state.generation} not applied yet: {e}", file=sys.stderr, flush=True)
                self.stopping.wait(5 * self.interval)

