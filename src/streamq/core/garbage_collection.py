"""The garbage collector's pace in streamq's own long-running processes (worker, gateway).

CPython starts a collection every 700 new container objects. A worker with a thousand live
streams allocates that many in well under a millisecond, and each collection walks every
young object: 1.8 s of a 14 s run went to the collector (800 young, 70 middle and 6 full
collections, the longest 204 ms), and every pause held every stream's next delta.
Almost nothing a delta allocates is cyclic (reference counting frees it), so collecting ten
times less often loses little memory; what start-up made (modules, classes, the clients) is
frozen out of every later full collection. Processes that embed streamq keep their own pace.

Memory freed goes back to the system only through the C allocator (:func:`release_free_pages`,
glibc's ``malloc_trim``); the gateway process runs on it for that
(:func:`restart_on_c_allocator`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import sys
from collections.abc import Callable
from typing import cast

# Container objects allocated between two young collections (CPython's default: 700).
YOUNG_THRESHOLD = 50_000


def pace_for_service() -> None:
    """Collect rarely, and never walk what exists now again; call once start-up is done."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def release_free_pages() -> bool:
    """Ask the C allocator to return its free pages to the operating system (glibc's
    ``malloc_trim``): what CPython frees stays in the process otherwise. True when some were
    returned; False when none were, or the C library has no such call. Blocks for a moment on a
    large heap: run it in a thread."""
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))


def restart_on_c_allocator() -> None:
    """Run this process's command again, in place (same pid), on the C library's allocator
    (``PYTHONMALLOC=malloc``), where that allocator can give memory back
    (:func:`release_free_pages`). Returns without doing so where ``PYTHONMALLOC`` already says
    which allocator, Python ignores the environment (``-E``, ``-I``) or runs in development
    mode (its debug allocator), the C library has no ``malloc_trim``, or ``exec`` fails.

    For a process whose memory comes and goes with crowds of connections: CPython's own
    allocator returns a 1 MiB arena only once every block in it is free, and the few objects a
    crowd leaves behind (a counter's new value, a cache entry) hold most of its arenas. The
    process's children inherit ``PYTHONMALLOC``; start-up runs twice.
    """
    if os.environ.get("PYTHONMALLOC") or sys.flags.ignore_environment or sys.flags.dev_mode:
        return
    if os.name != "posix" or getattr(sys, "frozen", False) or _malloc_trim() is None:
        return
    for stream in (sys.stdout, sys.stderr):  # (None when its descriptor was closed)
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    with contextlib.suppress(OSError, ValueError):  # run on as we are
        os.execve(sys.executable, sys.orig_argv, {**os.environ, "PYTHONMALLOC": "malloc"})


@functools.cache  # (finding the C library runs a helper program: once per process)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, if this C library has it."""
    name = ctypes.util.find_library("c")
    try:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None
    return cast("Callable[[int], int] | None", trim)
