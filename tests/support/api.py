"""The REST API under test: in this process (``TestClient(create_app(settings))``, the fast way,
for auth, errors and pagination), or as the real ``icefloe serve`` in a subprocess (uvicorn on a
free port of 127.0.0.1, for the smoke test and the fuzzing); and API tokens of each role."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.pool import NullPool
from starlette.testclient import TestClient

from icefloe import models, tokens
from icefloe.api import ApiSettings, create_app
from icefloe.settings import Settings
from tests.support.ledger import TERMINAL
from tests.support.services import free_port
from tests.support.waiting import Timeout, wait_for

START_TIMEOUT = 180.0  # seconds; shared 2-core machines import pyiceberg & co. slowly under load
STOP_TIMEOUT = 90.0


def make_tokens(database_url: str) -> dict[str, str]:
    """A live token per role, and a revoked one (``revoked``), made through :mod:`icefloe.tokens`."""
    engine = sa.create_engine(database_url, poolclass=NullPool)
    try:
        made = {role: tokens.create(engine, name=f"test-{role}", role=role)[1] for role in models.TOKEN_ROLES}
        made["revoked"] = tokens.create(engine, name="test-revoked", role="admin")[1]
        tokens.revoke(engine, "test-revoked")
    finally:
        engine.dispose()
    return made


def _auth(secret: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"} if secret else {}


@dataclass
class InProcessApi:
    """The app on the test's services, started (lifespan entered) in this process; ``tokens`` has
    a token per role. Every client shares the one started app."""

    app: FastAPI
    started: TestClient
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, role: str | None = None, token: str | None = None) -> httpx2.Client:
        """A client sending the token of ``role`` (or ``token``); none when both are None."""
        secret = token if token is not None else (self.tokens[role] if role else None)
        # The started client's transport: its requests reach the running app (a TestClient entered
        # again would run the app's startup a second time).
        return httpx2.Client(transport=self.started._transport, base_url=self.started.base_url, headers=_auth(secret))


@contextmanager
def in_process_api(
    settings: Settings, api_settings: ApiSettings | None = None, *, database_url: str
) -> Iterator[InProcessApi]:
    """``create_app(settings)`` started in this process, with a token per role on ``database_url``."""
    if api_settings is not None:
        settings = dataclasses.replace(settings, api=api_settings)
    app = create_app(settings)
    with TestClient(app) as started:
        yield InProcessApi(app, started, make_tokens(database_url))


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
            proc = self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"icefloe serve exited with {proc.returncode}:\n{self.log_text()}")
            try:
                return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(healthy, timeout=START_TIMEOUT, what="icefloe serve to answer", interval=0.3)
        except Timeout:
            self.kill()
            raise AssertionError(f"icefloe serve did not answer in {START_TIMEOUT}s:\n{self.log_text()}") from None
        return self

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
        return httpx.Client(base_url=self.url, headers=_auth(secret), timeout=60, **kwargs)


RUN_TIMEOUT = 300.0  # a run of the API tests: seconds of work, minutes on a loaded machine


def poll_run(client: httpx.Client, location: str) -> dict[str, Any]:
    """Until the run at ``location`` is finished, as a client would poll it."""

    def finished() -> dict[str, Any] | None:
        run = client.get(location)
        assert run.status_code == 200, run.text
        return dict(run.json()) if run.json()["status"] in TERMINAL else None

    return wait_for(finished, timeout=RUN_TIMEOUT, what=f"run {location} to finish", interval=0.5)
