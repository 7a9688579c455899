"""Property-based fuzzing of the OpenAPI document with schemathesis, against the real server.

Every operation gets generated requests, valid and invalid (bounded: ``MAX_EXAMPLES`` a phase, a fixed
seed, so CI takes about a minute or two); every answer must be no 5xx, a documented status code and
content type, and a body that matches the documented schema (problem details for every error).
Calls are made as an admin so that every operation is reached past authentication.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests.support.api import ApiServer

pytestmark = pytest.mark.server

MAX_EXAMPLES = 10
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]


def test_openapi_fuzzing_finds_no_server_error_and_no_schema_violation(
    module_server: ApiServer, module_database_url: str, tmp_path: Path
) -> None:
    with module_server.client("admin") as admin:
        # Something to find for the operations that read one resource: ingestion 1, run 1, files 1-200.
        admin.post(
            "/api/v1/ingestions",
            json={"name": "fuzz", "source": "s3://fuzz/in/", "format": "csv", "table": "fuzz.t"},
        ).raise_for_status()
        admin.post("/api/v1/ingestions/fuzz/run").raise_for_status()
    engine = sa.create_engine(module_database_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO files (ingestion_id, file_path, size, etag, status, error_type, error_message) "
                "SELECT 1, 's3://fuzz/in/' || n || '.csv', n, 'e' || n, "
                "(ARRAY['DISCOVERED','SUCCESS','FAILED'])[1 + n % 3], NULL, NULL "
                "FROM generate_series(1, 200) AS n"
            )
        )
    engine.dispose()
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{module_server.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {module_server.tokens['admin']}",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "20261127",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--generation-with-security-parameters",
            "false",
            "--request-timeout",
            "60",
            "--suppress-health-check",
            "all",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
    assert "No issues found" in proc.stdout or " passed" in proc.stdout, proc.stdout[-5000:]
