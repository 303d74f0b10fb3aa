"""Opt-in CPU profile of the suite (docs/testing.md: Where the time goes): with
TUNEMAKE_CPU_PROFILE=<file>, every test appends one line `<cpu s> <wall s> <test id>` to the
file, where CPU is the test's own process time plus that of every process it waited for
(snakemake and its jobs), setup and teardown included: a module fixture's build is counted in
its first test. Sort it with `sort -rn <file> | head`."""

from __future__ import annotations

import os
import resource
import time

import pytest


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    path = os.environ.get("TUNEMAKE_CPU_PROFILE")
    if not path:
        yield
        return
    cpu, wall = cpu_seconds(), time.monotonic()
    yield
    line = f"{cpu_seconds() - cpu:8.1f} {time.monotonic() - wall:8.1f} {item.nodeid}\n"
    with open(path, "a") as out:
        out.write(line)
