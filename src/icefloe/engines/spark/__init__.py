"""The Spark engine: batches read and written by Apache Spark through Spark Connect.

- :mod:`.engine` — staging a batch in one Spark job and committing it (the :class:`Engine` seam);
- :mod:`.failures` — which Spark errors are a file's fault, the cluster's, or a commit's outcome;
- :mod:`.session` — Connect sessions with icefloe's Iceberg catalog configured;
- :mod:`.server`, :mod:`.jars`, :mod:`.cli` — ``icefloe spark-server``, a local server for
  development and tests.

The Spark Connect client (``pyspark-client`` 4.0.x) is the optional extra ``icefloe[spark]``,
imported lazily: nothing here imports pyspark at module load. See ``docs/spark.md``.
"""
