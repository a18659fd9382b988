"""Deadlines: one time unit for every wait in the tests, scaled on a slow machine by
HEARTH_TEST_TIMEOUT_FACTOR (as websockets' tests scale `MS`), and `eventually`.

A test waits for what a user would observe: a reply, an event, a close code (see
`Client`). `eventually` is for the few things only the server's own state shows, such as
the gate's count of open connections or a line in a worker's log: it is the one place
where tests poll.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

# One time unit for deadlines, scaled on slow machines (HEARTH_TEST_TIMEOUT_FACTOR).
UNIT = float(os.environ.get("HEARTH_TEST_TIMEOUT_FACTOR", "1"))
# How long anything a test waits for may take before the test fails.
TIMEOUT = 10 * UNIT

T = TypeVar("T")


@overload
async def eventually(check: Callable[[], Awaitable[T]], *, within: float = ..., every: float = ...) -> T: ...


@overload
async def eventually(check: Callable[[], T], *, within: float = ..., every: float = ...) -> T: ...


async def eventually(check: Callable[[], Any], *, within: float = TIMEOUT, every: float = 0.01) -> Any:
    """Call `check` (a function or a coroutine function) every `every` seconds until it
    returns something true, and return that; fail if it has not within `within` seconds.

    `check` is called at once, and once more at the deadline. An exception it raises fails
    the test: a check that may meet a server not yet listening catches that itself."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value: Any = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"still not true after {within:.1f} s: {described(check)}")
        await asyncio.sleep(min(every, left))


def described(function: Callable[..., Any]) -> str:
    """The source of `function` (a lambda's whole line), for a failure message."""
    try:
        return inspect.getsource(function).strip()
    except (OSError, TypeError):
        return repr(function)
