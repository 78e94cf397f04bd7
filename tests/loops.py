"""Event loops in tests: a test process whose session browser (Playwright's sync API) has run keeps an event loop
running in its main thread, where ``asyncio.run`` then refuses to start another. Code under test that runs its
own loop (the emulator's HTTP client, test fleets) is run in a thread of its own instead."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coroutine)`` in a thread of its own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def in_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a thread of its own (for code that may start an event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()
