#!/usr/bin/env python3
"""Client cost of conditional GETs of small objects, per store and library (the sources' library choice).

    .venv/bin/pip install -e '.[dev,bench]' && .venv/bin/python benchmarks/stores.py [--objects 1000]

Starts SeaweedFS, fake-gcs-server and Azurite on 127.0.0.1 (as the tests do), writes N objects of
~2 KB to each, then reads them all with 8 threads, each GET conditional on the listed ETag, through:

* S3: icefloe's reader (obstore's ``S3Store`` since 2026-12-02; before, a botocore-presigned URL
  fetched by urllib3), boto3 ``get_object``;
* GCS: obstore's ``GCSStore``, ``google-cloud-storage`` (``Blob.download_as_bytes(if_etag_match=…)``);
* Azure: obstore's ``AzureStore``, ``azure-storage-blob`` (``download_blob(etag=…, match_condition=…)``).

Reported: wall seconds and this process's CPU seconds (user + system, every thread: Rust's included)
per 1,000 GETs. The emulators run in their own processes, so their CPU is not counted; SeaweedFS's
is, for icefloe's reader (the server's share of a small file's cost on a machine that runs both).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import obstore
import psutil

from icefloe import embedded
from icefloe.s3 import ObjectReader
from icefloe.settings import S3Settings
from tests.support.emulators import AZURITE_ACCOUNT, AZURITE_KEY, Azurite, FakeGcs

BODY = b"".join(b'{"id": %d, "name": "row-%d", "value": %d.5}\n' % (i, i, i) for i in range(50))


def measure(
    label: str, keys: list[tuple[str, str]], get: Callable[[str, str], bytes], server: int | None = None
) -> dict[str, float | str]:
    """Wall and client CPU per 1,000 GETs; with ``server`` (a pid on this machine) the server's CPU too."""
    get(*keys[0])  # connect, authenticate
    served = psutil.Process(server) if server is not None else None
    server_cpu = sum(served.cpu_times()[:2]) if served else 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(8) as pool:
        total = sum(len(b) for b in pool.map(lambda kv: get(*kv), keys))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert total == len(BODY) * len(keys), label
    per = 1000 / len(keys)
    row: dict[str, float | str] = {
        "client": label,
        "wall_s_per_1000": round(wall * per, 2),
        "cpu_s_per_1000": round(cpu * per, 2),
    }
    if served:
        row["server_cpu_s_per_1000"] = round((sum(served.cpu_times()[:2]) - server_cpu) * per, 2)
    return row


def s3_rows(n: int, workdir: Path) -> list[dict[str, float | str]]:

    with embedded.start_seaweedfs(workdir / "s3") as s3:
        embedded.create_bucket(s3, "bench")
        client = embedded.s3_client(s3, max_pool_connections=32)
        keys = []
        for i in range(n):
            etag = client.put_object(Bucket="bench", Key=f"k/{i:06d}.jsonl", Body=BODY)["ETag"].strip('"')
            keys.append((f"k/{i:06d}.jsonl", etag))
        settings = S3Settings(
            endpoint_url=s3.endpoint, region=s3.region, access_key_id=s3.access_key, secret_access_key=s3.secret_key
        )
        reader = ObjectReader(client, settings)
        return [
            measure("S3: icefloe's reader (obstore)", keys, lambda k, e: reader.read(f"s3://bench/{k}", e), s3.pid),
            measure(
                "S3: boto3 get_object",
                keys,
                lambda k, e: client.get_object(Bucket="bench", Key=k, IfMatch=e)["Body"].read(),
            ),
        ]


def gcs_rows(n: int, workdir: Path) -> list[dict[str, float | str]]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from obstore.store import GCSStore

    server = FakeGcs.start(workdir / "gcs.log")
    try:
        server.create_bucket("bench")
        for i in range(n):
            server.put("bench", f"k/{i:06d}.jsonl", BODY)
        key = {"gcs_base_url": server.endpoint, "disable_oauth": True, "client_email": "", "private_key": ""}
        store = GCSStore("bench", service_account_key=json.dumps(key | {"private_key_id": ""}))
        keys = [(m["path"], m["e_tag"] or "") for page in obstore.list(store, "k", chunk_size=1000) for m in page]
        os.environ["STORAGE_EMULATOR_HOST"] = server.endpoint
        sdk = storage.Client(project="bench", credentials=AnonymousCredentials())
        bucket = sdk.bucket("bench")
        generations = {b.name: b.generation for b in sdk.list_blobs("bench", prefix="k/")}
        return [
            measure(
                "GCS: obstore", keys, lambda k, e: bytes(obstore.get(store, k, options={"if_match": f'"{e}"'}).bytes())
            ),
            measure(
                "GCS: google-cloud-storage",
                keys,
                lambda k, e: bucket.blob(k).download_as_bytes(if_generation_match=generations[k]),
            ),
        ]
    finally:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
        server.stop()


def azure_rows(n: int, workdir: Path) -> list[dict[str, float | str]]:
    from azure.core import MatchConditions
    from azure.storage.blob import BlobServiceClient
    from obstore.store import AzureStore

    server = Azurite.start(workdir)
    try:
        server.create_container("bench")
        for i in range(n):
            server.put("bench", f"k/{i:06d}.jsonl", BODY)
        store = AzureStore(
            "bench",
            account_name=AZURITE_ACCOUNT,
            account_key=AZURITE_KEY,
            endpoint=server.endpoint,
            client_options={"allow_http": True},
        )
        keys = [(m["path"], m["e_tag"] or "") for page in obstore.list(store, "k", chunk_size=1000) for m in page]
        container = BlobServiceClient.from_connection_string(server.connection_string).get_container_client("bench")
        return [
            measure(
                "Azure: obstore",
                keys,
                lambda k, e: bytes(obstore.get(store, k, options={"if_match": f'"{e}"'}).bytes()),
            ),
            measure(
                "Azure: azure-storage-blob",
                keys,
                lambda k, e: container.download_blob(
                    k, etag=e, match_condition=MatchConditions.IfNotModified, max_concurrency=1
                ).readall(),
            ),
        ]
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--stores", default="s3,gcs,azure")
    args = parser.parse_args()
    rows: list[dict[str, float | str]] = []
    with tempfile.TemporaryDirectory(prefix="icefloe-stores-") as tmp:
        for name in args.stores.split(","):
            rows += {"s3": s3_rows, "gcs": gcs_rows, "azure": azure_rows}[name](args.objects, Path(tmp))
    print("| client | wall s / 1,000 GETs | CPU s / 1,000 GETs | server CPU s / 1,000 GETs |\n|---|---|---|---|")
    for row in rows:
        server = row.get("server_cpu_s_per_1000", "")
        print(f"| {row['client']} | {row['wall_s_per_1000']} | {row['cpu_s_per_1000']} | {server} |")


if __name__ == "__main__":
    main()
