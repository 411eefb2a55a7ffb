"""Several worker processes behind one port: `gatehouse serve --workers N`.

    the parent (`serve`)
      1. makes a fresh directory for the workers' metrics (PROMETHEUS_MULTIPROC_DIR)
      2. binds the socket and runs uvicorn's supervisor, which starts N workers and
         replaces any that dies; each death is logged, and its live gauges dropped
      3. at exit, stops the workers and removes the metrics directory
    each worker (`app`, as uvicorn's factory)
      builds the gateway from the GATEHOUSE_* environment, as a single process would, and
      listens for the others' evictions (invalidation.py), so a write in one evicts in all;
      it stops when the parent is gone, rather than serve on unsupervised

LISTEN/NOTIFY is PostgreSQL's: on SQLite a write cannot evict another process's cache, so
the gateway runs one process there.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from socket import socket

import uvicorn
from fastapi import FastAPI
from prometheus_client.multiprocess import mark_process_dead
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from gateway.app import create_app
from gateway.errors import ConfigError
from gateway.logs import configure_logging
from gateway.metrics import MULTIPROCESS_DIR
from gateway.settings import Settings

APP_FACTORY = "gateway.workers:app"
PARENT_CHECK_SECONDS = 1.0

log = logging.getLogger("gatehouse.workers")


def worker_count(requested: int | None, database_url: str) -> int:
    """How many workers to run: as asked, else one per core on PostgreSQL and one on SQLite."""
    try:
        backend = make_url(database_url).get_backend_name()
    except ArgumentError:
        raise ConfigError("GATEHOUSE_DATABASE_URL is not a database URL") from None
    if backend == "postgresql":
        return requested or _cores()
    if (requested or 1) > 1:
        raise ConfigError(
            f"--workers {requested} needs a PostgreSQL gateway database "
            f"(GATEHOUSE_DATABASE_URL is {backend}): only there does a write in one worker "
            "evict the record from the others' caches. Run one worker, or use PostgreSQL."
        )
    return 1


def _cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def serve(settings: Settings, workers: int) -> int:
    """Serve on settings.host:port with `workers` processes until stopped; 1 if one could
    not start (then the others are stopped too)."""
    # The workers read their settings from the environment; the command line's config too.
    os.environ["GATEHOUSE_CONFIG"] = str(settings.config)
    config = uvicorn.Config(
        APP_FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_level="warning",
        log_config=None,  # each worker sets up the gateway's JSON logging
        access_log=False,
    )
    with _metrics_directory():
        supervisor = _Supervisor(config, sockets=[config.bind_socket()])
        supervisor.run()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        log.error("a worker could not start (pid %s); the gateway stopped", failed[0])
        return 1
    return 0


@contextmanager
def _metrics_directory() -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="gatehouse-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR] = directory
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_DIR]


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, which replaces a worker that dies; this one also says so and
    drops the dead worker's live gauges from the shared metrics."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket]) -> None:
        super().__init__(config, sockets)
        self._known: dict[int | None, Process] = {}

    def keep_subprocess_alive(self) -> None:
        """Replace dead workers (uvicorn), then account for the ones that are gone."""
        super().keep_subprocess_alive()
        current = {process.pid: process for process in self.processes}
        for pid, process in self._known.items():
            if pid is not None and pid not in current:
                log.warning(
                    "worker %s ended (exit code %s); another replaces it", pid, process.exitcode
                )
                mark_process_dead(pid)  # type: ignore[no-untyped-call]  # no annotations
        self._known = current


def app() -> FastAPI:
    """One worker's gateway, from the GATEHOUSE_* environment (uvicorn calls it in each)."""
    settings = Settings()
    configure_logging(settings.log_level)
    threading.Thread(
        target=_stop_when_orphaned, args=(os.getppid(),), name="gatehouse-parent", daemon=True
    ).start()
    return create_app(settings)


def _stop_when_orphaned(parent: int) -> None:
    # A supervisor killed outright cannot stop its workers: each stops itself, gracefully.
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    log.warning("the supervising process %s is gone; this worker stops", parent)
    os.kill(os.getpid(), signal.SIGTERM)
