"""Helpers of the API tests: the real ``icefloe serve`` in a subprocess (uvicorn on a free port of
127.0.0.1), its environment, and API tokens of each role."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from icefloe import embedded, tokens

START_TIMEOUT = 180.0  # seconds; shared 2-core machines import pyiceberg & co. slowly under load
STOP_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiServer:
    """One ``icefloe serve`` process; ``url`` is its base URL, ``log`` its stderr."""

    env: dict[str, str]
    log: Path
    with_worker: bool = False
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        args = ["icefloe", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.with_worker:
            args.append("--with-worker")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"icefloe serve exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.kill()
        raise AssertionError(f"icefloe serve did not answer in {START_TIMEOUT}s:\n{self.log_text()}")

    def stop(self) -> int:
        """SIGTERM (graceful shutdown); returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"icefloe serve ignored SIGTERM:\n{self.log_text()}") from None
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self, role: str | None = None, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """A client sending the token of ``role`` (or ``token``); none when both are None."""
        secret = token if token is not None else (self.tokens[role] if role else None)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)


def service_env(database_url: str, s3: embedded.SeaweedS3, home: Path) -> dict[str, str]:
    """What ``icefloe_env`` gives, for a database and home of the caller's choosing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEFLOE_", "AWS_", "PYICEBERG_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env.update(s3.env())
    env.update(
        ICEFLOE_DATABASE_URL=database_url,
        ICEFLOE_HOME=str(home / "home"),
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(home / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "aws-credentials"),
        ICEFLOE_LOG_FORMAT="json",
    )
    return env


def make_tokens(database_url: str) -> dict[str, str]:
    """A live token per role, and a revoked one (``revoked``), made through :mod:`icefloe.tokens`."""
    engine = sa.create_engine(database_url, poolclass=NullPool)
    try:
        made = {role: tokens.create(engine, name=f"test-{role}", role=role)[1] for role in tokens.TOKEN_ROLES}
        made["revoked"] = tokens.create(engine, name="test-revoked", role="admin")[1]
        tokens.revoke(engine, "test-revoked")
    finally:
        engine.dispose()
    return made
