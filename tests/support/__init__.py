"""Helpers shared by every test tier, one module per noun.

- :mod:`.services`: the embedded PostgreSQL and SeaweedFS the fixtures start, template-database
  cloning, the environment of an ``icefloe`` process, and a PostgreSQL a test may restart.
- :mod:`.waiting`: waiting for a condition (with a deadline; by the database clock where it matters).
- :mod:`.ledger`: the ledger read straight with SQL (:class:`~.ledger.LedgerQueries`).
- :mod:`.tables`: the Iceberg table read back (rows, snapshots, the exactly-once check).
- :mod:`.cli`: the real ``icefloe`` CLI in a subprocess.
- :mod:`.inprocess`: ingestions defined and run in this process.
- :mod:`.api`: the API in process (``TestClient``) or as a real ``icefloe serve``, and its tokens.
- :mod:`.dashboard`: the dashboard in process through a browser-like client (cookies, CSRF tokens).
- :mod:`.browser`: Debian's chromium driven by Playwright, recording console errors, taking screenshots.
- :mod:`.processes`: background ``icefloe`` processes (workers) started, signalled and stopped by pid.
- :mod:`.workers`: the operations fault tests' harness (``Ops``): a seeded ingestion, its worker
  processes, and the exactly-once check.
- :mod:`.fault_proxy`: TCP and S3 proxies that cut or break what goes through them.
- :mod:`.race`: one process of the expired-lease race (a script).
- :mod:`.spark`: the Spark Connect server of the Spark tests, and Spark ingestions.

Tier-specific fixtures stay in each tier's ``conftest.py``.
"""
