"""The figures a checkpoint can fill in by itself, each cheap to take.

psutil is optional: without it there is no memory pressure (the server then falls back
to the host's monitoring samples, spec §2) and process memory comes from /proc where
there is one.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from .cycles import last_cycle_report
from .delegation import current_depth

log = logging.getLogger("oversight_client")


@functools.cache
def psutil_module() -> ModuleType | None:
    try:
        import psutil
    except ImportError:
        log.info("psutil is not installed: no automatic memory figures "
                 "(pip install 'oversight-client[metrics]')")
        return None
    return psutil


def memory_pressure() -> float | None:
    """Percent of the host's memory in use (psutil's ``virtual_memory().percent``)."""
    psutil = psutil_module()
    if psutil is None:
        return None
    try:
        return float(psutil.virtual_memory().percent)
    except Exception:  # a sandbox without /proc/meminfo must not break a checkpoint
        log.debug("virtual_memory() failed", exc_info=True)
        return None


def process_memory() -> tuple[int | None, int | None]:
    """(rss_bytes, vms_bytes) of this process, or None where neither source works."""
    psutil = psutil_module()
    if psutil is not None:
        try:
            info = psutil.Process().memory_info()  # cheap: never USS/PSS on every sample
            return int(info.rss), int(info.vms)
        except Exception:
            log.debug("memory_info() failed", exc_info=True)
    try:
        with open("/proc/self/statm") as statm:
            vms_pages, rss_pages = (int(n) for n in statm.read().split()[:2])
        page = os.sysconf("SC_PAGE_SIZE")
        return rss_pages * page, vms_pages * page
    except (OSError, ValueError, AttributeError):
        return None, None


def default_host() -> str:
    return socket.gethostname()


def fill_metrics(given: Mapping[str, Any] | None, host: str | None = None) -> dict[str, Any]:
    """The caller's metrics, completed with automatic ones for the keys it left out.

    A key the caller gave is kept as given, even when its value is None (which tells the
    server "no value" and so lets a caller switch one figure off).
    """
    metrics = dict(given or {})
    if "memory_pressure" not in metrics:
        pressure = memory_pressure()
        if pressure is not None:
            metrics["memory_pressure"] = pressure
    metrics.setdefault("delegation_depth", current_depth())
    if "circular_refs" not in metrics:
        # The last scan's count: a fresh scan is a full collection, too slow for every
        # checkpoint (checkpoints take scan_cycles=True to ask for one).
        report = last_cycle_report()
        if report is not None:
            metrics["circular_refs"] = report.total
    if host and "host" not in metrics:
        metrics["host"] = host
    return metrics
