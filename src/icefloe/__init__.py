"""icefloe: incremental, exactly-once ingestion of files from object storage into Apache Iceberg."""

__version__ = "0.1.0"
__all__ = ["__version__"]
