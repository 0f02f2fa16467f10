"""pytest plugin for bench/gpu.sh: one line per finished test with its outcome and seconds, as it finishes,
so that a step stopped at its time limit still says where the time went (``--durations`` prints only at the end).

    PYTHONPATH=bench python -m pytest -p pytest_times ...
"""

from __future__ import annotations


def pytest_runtest_logreport(report) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        print(f"\n[test time] {report.duration:7.1f} s {report.outcome:8} {report.nodeid}", flush=True)
