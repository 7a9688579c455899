"""The Spark engine: batches read and written by Apache Spark through Spark Connect.

The Spark Connect client (``pyspark-client`` 4.0.x) is the optional extra ``icefloe[spark]``,
imported lazily: nothing here imports pyspark at module load. See ``docs/spark.md``.
"""

from __future__ import annotations

from icefloe.errors import ConfigurationError

EXTRA = "icefloe[spark]"


def require_client() -> None:
    """Raise a one-line :class:`ConfigurationError` when the Spark Connect client is missing."""
    try:
        import pyspark.sql.connect.session  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"the Spark engine needs the Spark Connect client: pip install '{EXTRA}' ({exc})"
        ) from None
