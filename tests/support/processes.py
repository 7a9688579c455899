"""Background ``icefloe`` processes of a test (workers, runs, the race script): started with their
output going to files (never a full pipe), signalled, and always stopped by pid."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.support.waiting import Timeout, wait_for


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no output)"


@dataclass
class Proc:
    """One ``icefloe`` process the test started; output goes to files."""

    popen: subprocess.Popen[bytes]
    name: str
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def describe(self) -> str:
        return (
            f"{self.name} (pid {self.pid}, rc={self.popen.returncode})\n"
            f"stdout: {tail(self.out, 2000)}\nstderr: {tail(self.err)}"
        )

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines the process wrote to stderr."""
        events = []
        for line in tail(self.err, 10_000_000).splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events


class Processes:
    """The processes of one test, in the environment ``env`` (without any ``ICEFLOE_FAULT_POINT``
    unless given), their output under ``tmp_path``; :meth:`close_processes` kills what is left."""

    env: dict[str, str]
    tmp_path: Path
    procs: list[Proc]

    def _env(self, extra_env: dict[str, str] | None) -> dict[str, str]:
        env = dict(self.env)
        env.pop("ICEFLOE_FAULT_POINT", None)
        env.update(extra_env or {})
        return env

    def spawn(self, argv: list[str], tag: str, extra_env: dict[str, str] | None) -> Proc:
        out, err = self.tmp_path / f"{tag}.out", self.tmp_path / f"{tag}.err"
        with out.open("wb") as fout, err.open("wb") as ferr:
            popen = subprocess.Popen(argv, env=self._env(extra_env), stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr)
        proc = Proc(popen, tag, out, err)
        self.procs.append(proc)
        return proc

    def start(self, *args: str, name: str | None = None, extra_env: dict[str, str] | None = None) -> Proc:
        """Start ``icefloe ARGS...`` in the background."""
        tag = f"{name or args[0].lstrip('-')}-{uuid.uuid4().hex[:6]}"
        return self.spawn(["icefloe", *args], tag, extra_env)

    def start_worker(
        self,
        *,
        lease: int = 10,
        grace: float = 10.0,
        poll: float = 0.2,
        concurrency: int = 1,
        extra_env: dict[str, str] | None = None,
        name: str = "worker",
    ) -> Proc:
        return self.start(
            "--verbose",
            "worker",
            "--poll-seconds",
            str(poll),
            "--grace-seconds",
            str(grace),
            "--lease-seconds",
            str(lease),
            "--concurrency",
            str(concurrency),
            name=name,
            extra_env={"ICEFLOE_LEASE_SECONDS": str(lease), **(extra_env or {})},
        )

    def wait(self, proc: Proc, timeout: float) -> int:
        """Wait for a process to end (SIGKILL it and fail after ``timeout``); returns its exit code."""
        try:
            return proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            raise Timeout(f"{proc.name} still running after {timeout:.0f}s\n{proc.describe()}") from None

    def cli(self, *args: str, timeout: float = 120.0, extra_env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """``icefloe ARGS...`` to its end: (returncode, stdout, stderr)."""
        proc = self.start(*args, extra_env=extra_env)
        rc = self.wait(proc, timeout)
        return rc, tail(proc.out, 100_000), tail(proc.err, 8000)

    def signal(self, proc: Proc, sig: int) -> None:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def stop_worker(self, proc: Proc, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code (SIGKILL and fail after ``timeout``)."""
        self.signal(proc, signal.SIGTERM)
        return self.wait(proc, timeout)

    def stop_workers(self, procs: Iterable[Proc], timeout: float = 60.0) -> list[int]:
        """SIGTERM to all, then their exit codes (each SIGKILLed and failed after ``timeout``)."""
        procs = list(procs)
        for proc in procs:
            self.signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        return [self.wait(proc, max(1.0, deadline - time.monotonic())) for proc in procs]

    @staticmethod
    def kill(proc: Proc) -> None:
        """SIGKILL one process we started (resumed first, in case it is stopped)."""
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(10)

    def close_processes(self) -> None:
        """Stop every process of the test (by pid)."""
        for proc in self.procs:
            self.kill(proc)

    def logs(self, procs: Iterable[Proc] | None = None) -> str:
        return "\n\n".join(p.describe() for p in (self.procs if procs is None else procs))

    @staticmethod
    def events(proc: Proc) -> list[dict[str, Any]]:
        return proc.events()

    def wait_started(self, proc: Proc, timeout: float = 90) -> None:
        """Until a worker logged that it started."""
        wait_for(
            lambda: proc.popen.poll() is not None or "started with" in tail(proc.err, 1_000_000),
            timeout=timeout,
            what=f"{proc.name} to start",
            interval=0.2,
        )
        assert proc.popen.poll() is None, proc.describe()


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a process and its children (0 once it is gone)."""
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total
