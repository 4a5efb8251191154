"""A run's teardown: every agent asked to stop, then every container and the network removed,
waiting (bounded) for an engine that stops answering; what it never gets back is remembered for
the next run's sweep.

``Teardown`` is the part of ``engine.experiment.Experiment`` that undoes what the run created;
it reads the experiment's client, containers, readers, network and state.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import docker.errors

from tcplimits.engine import faults
from tcplimits.engine.cleanup import shielded, sweep

ENGINE_RETURN_S = 30  # how long teardown waits for a lost engine to answer again
# Teardown asks every agent to stop (SIGTERM: each resets its connections, SO_LINGER 0) and
# waits this long for them to exit before removing the containers: connections of a
# container removed while they are open linger in the host kernel for minutes, as orphans
# and TIME-WAIT entries that slow the next run's connect() (benchmarks/bench_teardown.py).
AGENT_STOP_S = 10
# Resetting a connection costs both ends some CPU (the agent's close, the peer's RST): a
# million held took ~17 s of teardown on 2 cores. Waits for agents that close connections grow
# by this much per connection held (measured: bench_million).
CLOSE_S_PER_CONNECTION = 25e-6


class Teardown:
    """Stop the agents, remove what the run created; the experiment's timeline records how
    long it took (teardown_s)."""

    def teardown(self) -> None:
        """Stop every agent and remove every resource, whatever the run raised (shielded from
        SIGINT and SIGTERM)."""
        t0 = time.monotonic()
        with shielded():
            self.stop_agents()
            self._remove_all()
        self.timeline["teardown_s"] = time.monotonic() - t0

    def close_wait(self, base: float) -> float:
        """Seconds to wait for agents that reset the connections they hold: ``base``, plus
        CLOSE_S_PER_CONNECTION for each connection held."""
        return base + CLOSE_S_PER_CONNECTION * max(self.state.connections, self.state.accepted)

    def stop_agents(self) -> None:
        """SIGTERM every container still running and wait (at most AGENT_STOP_S) for each to
        exit: the agents reset their connections, so nothing of the run stays in the host's
        kernel once its containers are removed."""
        if AGENT_STOP_S <= 0:
            return
        limit = self.close_wait(AGENT_STOP_S)
        stopping = []
        for role, container in self.containers.items():
            try:
                container.kill(signal="SIGTERM")
                stopping.append((role, container))
            except Exception:  # not running, or the engine is gone: removal decides
                pass
        end = time.monotonic() + limit
        for role, container in stopping:
            try:
                container.wait(timeout=max(0.1, end - time.monotonic()))
            except Exception as err:  # a timeout or an engine error: removal kills it anyway
                self.log(f"warning: {role} did not stop within {limit:.0f} s ({err}); "
                         "its connections may linger in the host kernel")

    def _remove_all(self) -> None:
        # Clients first: the server must outlive them so the network empties cleanly.
        for role in sorted(self.containers, key=lambda r: r == "server"):
            self._removing(f"container {self.containers[role].name}",
                           lambda c=self.containers[role]: c.remove(force=True))
        for reader in self.readers.values():
            reader.join(timeout=5)
        if self.network is not None:
            self._removing(f"network {self.network_name}", self._remove_network)
        # Anything of this run that escaped the bookkeeping above.
        self._removing(f"resources of run instance {self.instance}",
                       lambda: sweep(self.client, instance=self.instance))

    def _remove_network(self) -> None:
        for attempt in range(3):  # endpoints of just-removed containers linger a moment
            try:
                self.network.remove()
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as err:
                if attempt == 2:
                    self.log(f"warning: could not remove the network: {err}")
                time.sleep(1)

    def _removing(self, what: str, remove: Callable[[], Any]) -> None:
        """One removal. When the engine does not answer, wait (bounded) for it to come back
        and retry; if it never does, remember what is left for the next run's sweep."""
        while True:
            try:
                remove()
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as err:
                self.log(f"warning: could not remove {what}: {err}")
                return
            except Exception as err:
                if not faults.is_engine_gone(err):
                    raise
                if not self._engine_back():
                    self.left_behind.append(what)
                    return

    def _engine_back(self) -> bool:
        if self._engine_gone:
            return False
        self.log(f"the Docker engine does not answer; waiting up to {ENGINE_RETURN_S} s for it "
                 "to come back to remove the run's containers")
        end = time.monotonic() + ENGINE_RETURN_S
        while time.monotonic() < end:
            try:
                self.client.ping()
                return True
            except Exception as err:
                if not faults.is_engine_gone(err):
                    raise
                time.sleep(0.5)
        self._engine_gone = True
        return False
