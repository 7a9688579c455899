#!/usr/bin/env python3
"""Run ``refbench.py`` unchanged, with longer S3 timeouts for pyarrow's S3 filesystem.

    python refshim.py /path/to/refbench.py batched s3://landing/d2/ bench.t

pyarrow's ``S3FileSystem`` (used by refbench's batched reader and by pyiceberg's writes) aborts a
request that moves less than 1 byte/s for ``request_timeout`` seconds, 3 s by default (the AWS C++
SDK's). On a busy 2-core machine SeaweedFS can stall that long, and refbench's batched loader then
dies with ``AWS Error NETWORK_CONNECTION ... Operation too slow``. This shim only sets
``request_timeout``/``connect_timeout`` (from ``REFBENCH_S3_REQUEST_TIMEOUT``, seconds) where the
caller left them unset, then runs refbench as ``__main__``: no other behaviour changes.
run.py uses it unless ``--ref-s3-request-timeout 0``, and records that it did.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any


def main() -> None:
    timeout = float(os.environ.get("REFBENCH_S3_REQUEST_TIMEOUT", "0"))
    if timeout > 0:
        import pyarrow.fs as pafs

        original = pafs.S3FileSystem

        def s3_filesystem(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("request_timeout") is None:
                kwargs["request_timeout"] = timeout
            if kwargs.get("connect_timeout") is None:
                kwargs["connect_timeout"] = timeout
            return original(*args, **kwargs)

        pafs.S3FileSystem = s3_filesystem
    path = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    main()
