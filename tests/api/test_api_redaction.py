"""A connection cut in the middle of a GET leaks no credential or signature: not to the logs of a
real ``icefloe run``, not to the ledger, not to ``icefloe files --json``, not to the API's file listing.

A TCP proxy on 127.0.0.1 in front of SeaweedFS closes the connection of the GETs of two objects:
one before any byte of the answer (the client retries it, then names the request in its error), one
after the answer's headers and a few bytes of its body.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from icefloe import embedded
from tests.support.api import ApiServer

if TYPE_CHECKING:
    from tests.support.services import PutObjects

pytestmark = pytest.mark.server  # a real `icefloe serve` and `icefloe run`

CUT_EARLY, CUT_MID = "cut-early", "cut-mid"


class CuttingProxy:
    """Forwards every connection to ``upstream`` (one request each: ``Connection: close``); a GET of
    a key holding ``cut-early`` is dropped unanswered, one holding ``cut-mid`` after the answer's
    headers and 10 bytes of its body."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.cuts = {CUT_EARLY: 0, CUT_MID: 0}
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            self._forward(client)
        except OSError:
            pass
        finally:  # shutdown, not only close: the pump thread still reads from this socket
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    def _forward(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                return
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
        request_line = lines[0].decode("latin-1")
        method, _, target = request_line.partition(" ")
        key = target.split("?", 1)[0]  # a listing's query names no object
        fault = next((f for f in (CUT_EARLY, CUT_MID) if method == "GET" and f in key), None)
        if fault == CUT_EARLY:
            self.cuts[fault] += 1
            return
        with socket.create_connection(self.upstream, timeout=30) as upstream:
            upstream.sendall(b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + rest)
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
            answer = b""
            while True:
                chunk = upstream.recv(65536)
                if not chunk:
                    return
                if fault == CUT_MID:
                    answer += chunk
                    if b"\r\n\r\n" in answer:
                        client.sendall(answer[: answer.index(b"\r\n\r\n") + 4 + 10])
                        self.cuts[fault] += 1
                        return
                    continue
                client.sendall(chunk)

    def close(self) -> None:
        self.listener.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := src.recv(65536):
            dst.sendall(chunk)


@pytest.fixture
def cutting_proxy(s3: embedded.SeaweedS3) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(s3.endpoint)
    yield proxy
    proxy.close()


def test_a_cut_connection_leaks_no_credentials(
    icefloe_env: dict[str, str],
    start_server: Callable[..., ApiServer],
    database_url: str,
    s3: embedded.SeaweedS3,
    bucket: str,
    put_objects: PutObjects,
    cutting_proxy: CuttingProxy,
) -> None:
    rows = "".join(json.dumps({"id": n, "text": "x" * 200}) + "\n" for n in range(50)).encode()
    put_objects(bucket, {f"in/{name}.jsonl": rows for name in ("good-1", "good-2", CUT_EARLY, CUT_MID)})
    env = icefloe_env | {"AWS_ENDPOINT_URL": cutting_proxy.endpoint, "ICEFLOE_LOG_FORMAT": "text"}
    create = ["ingestion", "create", "leaky", "--source", f"s3://{bucket}/in/", "--format", "jsonl"]
    subprocess.run(["icefloe", *create, "--table", "e2e.leaky"], env=env, check=True, capture_output=True)

    run = subprocess.run(
        ["icefloe", "--verbose", "run", "leaky", "--json"], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 3, (run.stdout, run.stderr)
    assert cutting_proxy.cuts[CUT_EARLY] > 1 and cutting_proxy.cuts[CUT_MID] >= 1, cutting_proxy.cuts
    summary = json.loads(run.stdout)
    assert (summary["status"], summary["files_succeeded"], summary["files_failed"]) == ("PARTIAL", 2, 2)
    assert all(f"{n}.jsonl" in run.stderr for n in (CUT_EARLY, CUT_MID))  # each failure is named

    files = subprocess.run(
        ["icefloe", "files", "leaky", "--json"], env=env, capture_output=True, text=True, check=True
    ).stdout
    engine = sa.create_engine(database_url, poolclass=NullPool)
    with engine.connect() as conn:
        failed = conn.execute(sa.text("SELECT file_path, error_type, error_message FROM files WHERE status = 'FAILED'"))
        ledger_text = [tuple(r) for r in failed]
        attempts = conn.execute(sa.text("SELECT error_message FROM file_attempts WHERE error_message IS NOT NULL"))
        ledger_text += [tuple(r) for r in attempts]
    engine.dispose()
    assert {r[0] for r in ledger_text if len(r) == 3} == {f"s3://{bucket}/in/{n}.jsonl" for n in (CUT_EARLY, CUT_MID)}
    for path, error_type, message in (r for r in ledger_text if len(r) == 3):
        assert error_type == "TransientError" and path in message, (path, message)

    api = start_server()
    with api.client("reader") as reader:
        listing = reader.get("/api/v1/ingestions/leaky/files", params={"status": "FAILED"}).text

    for where, text in {
        "stderr of icefloe run": run.stderr,
        "the ledger": repr(ledger_text),
        "icefloe files --json": files,
        "the API": listing,
        "the server's log": api.log_text(),
    }.items():
        # The access key id as a signature carries it: SigV2 (=KEY&) or SigV4 (KEY/20261201/...).
        for secret in (f"={s3.access_key}&", f"={s3.access_key}%2F20", f"{s3.access_key}/20", s3.secret_key):
            assert secret not in text, f"{secret} in {where}:\n{text}"
        signing = re.search(r"(Signature|Credential|AWSAccessKeyId|Expires)=(?!\*\*\*)", text)
        assert signing is None, f"{signing} in {where}:\n{text}"
