"""Threads beside the event loop whose work can wait: they run at the lowest CPU priority.

The gateway's process shares a core between the event loop's thread and such threads (the
request log's writer, background snapshot reloads). At equal priority, when the loop's thread
woke up (a request arrived) the kernel let a busy background thread run on first, and the
request waited for it: the c=1 p99 of the benchmark (bench/seqclient.py). Linux nices threads
one by one, so only these threads are lowered; elsewhere `setpriority` would lower the whole
process, and nothing is changed.

`with_released_connections` runs a job in any such worker thread (these, the account workers)
and gives the thread's database connections back when it ends.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import close_old_connections, connections

log = logging.getLogger(__name__)

T = TypeVar("T")

LOW_PRIORITY_NICE = 19


def lower_thread_priority() -> None:
    """The calling thread at the lowest CPU priority (Linux only)."""
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOW_PRIORITY_NICE)
    except OSError as exc:  # a sandbox that forbids it: only latency is at stake
        log.debug("thread priority unchanged (%s)", exc)


def low_priority_executor(name: str) -> ThreadPoolExecutor:
    """One thread, at the lowest priority (see the module's docstring)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name,
                              initializer=lower_thread_priority)


def with_released_connections(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs a sync ORM job in a worker thread on fresh connections and gives them back after:
    with PostgreSQL's pool (a few connections a process) a connection an idle thread keeps is
    one that requests then wait for. A SQLite connection is kept (no pool to give it back to;
    opening one costs ~1 ms of CPU, many times a snapshot's version check)."""
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        for connection in connections.all(initialized_only=True):  # this thread's only
            if connection.vendor != "sqlite":
                connection.close()
