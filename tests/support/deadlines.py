"""Deadlines: one time unit for every wait in the tests, scaled on a slow machine by
HEARTH_TEST_TIMEOUT_FACTOR (as websockets' tests scale `MS`)."""

from __future__ import annotations

import os

# One time unit for deadlines, scaled on slow machines (HEARTH_TEST_TIMEOUT_FACTOR).
UNIT = float(os.environ.get("HEARTH_TEST_TIMEOUT_FACTOR", "1"))
# How long anything a test waits for may take before the test fails.
TIMEOUT = 10 * UNIT
