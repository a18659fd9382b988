"""Prometheus metrics of one worker, served at /metrics (scrape every worker).

Counted where they happen, with one registry per app so tests can run several servers in
one process. Labels carry ops and close codes, never users, rooms or text.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector, generate_latest

LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH = (1, 2, 5, 10, 25, 50, 100, 250, 500)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Which worker answered the scrape, and its CPU, memory and open files (process_*).
        Info("hearth_worker", "The worker process that serves this scrape", registry=r).info({"pid": str(os.getpid())})
        ProcessCollector(registry=r)
        self.connections = Gauge("hearth_connections", "Authenticated websocket connections", registry=r)
        self.rooms = Gauge("hearth_rooms_active", "Rooms with members on this worker", registry=r)
        self.joins = Counter("hearth_joins", "Room joins", registry=r)
        self.commands = Counter("hearth_commands", "Commands received, by op", ["op"], registry=r)
        self.errors = Counter("hearth_command_errors", "Commands answered with an error, by code", ["code"], registry=r)
        self.messages_in = Counter("hearth_events_committed", "Durable events committed by this worker", registry=r)
        self.frames_out = Counter("hearth_frames_out", "Event frames handed to connections", registry=r)
        self.fanout = Histogram(
            "hearth_fanout_latency_seconds", "From commit to hand-off to local connections", buckets=LATENCY, registry=r
        )
        self.batch = Histogram("hearth_commit_batch_size", "Events per group commit", buckets=BATCH, registry=r)
        self.commit = Histogram("hearth_commit_seconds", "Time of one group commit", buckets=LATENCY, registry=r)
        self.closes = Counter("hearth_closes", "Connections closed by the server, by close code", ["code"], registry=r)
        self.overflows = Counter("hearth_outbox_overflows", "Outboxes that overflowed (closed 4408)", registry=r)
        self.shed = Counter("hearth_typing_shed", "Typing events dropped for connections that were behind", registry=r)
        self.gap_fills = Counter("hearth_gap_fills", "Events filled from the store after a gap", registry=r)
        self.broker_reconnects = Gauge("hearth_broker_reconnects", "Times the broker connection came back", registry=r)
        self.broker_up = Gauge("hearth_broker_up", "1 while the broker connection is up", registry=r)
        gc_pause = Histogram(
            "hearth_gc_pause_seconds",
            "Pauses of Python's cycle collector, by generation: nothing else runs meanwhile",
            ["generation"],
            buckets=LATENCY,
            registry=r,
        )
        self._gc_pauses = [gc_pause.labels(str(generation)) for generation in range(3)]
        self._gc_started = 0.0

    def watch_gc(self) -> None:
        """Time every collection of this process's cycle collector until `unwatch_gc()`."""
        gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_pauses[info["generation"]].observe(time.perf_counter() - self._gc_started)

    def render(self) -> bytes:
        return generate_latest(self.registry)
