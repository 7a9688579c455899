"""Parsing untrusted bytes where a native crash cannot take the worker down.

pyarrow's readers are C++: a hostile file can crash them (pyarrow 26 segfaulted on JSON lines whose
first line is ``null``, and on JSON nested 10,000 deep). A crash in the worker process would lose
the whole batch and, retried, crash every worker that claims it. So fetched files are decompressed
and parsed in a small pool of child processes: bytes go in through a pipe, Arrow IPC comes out.
A child that dies costs only the file it was parsing (FAILED ``ParserCrashed``, at the first crash)
and is replaced; the rest of the batch goes on.

Children are plain ``python -m icefloe.isolation`` processes speaking length-prefixed
frames on stdin/stdout: nothing of the worker (threads, connections, its ``__main__``) is forked
or imported into them. Each starts once (importing pyarrow: ~0.3 s) and serves many files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from typing import IO

import pyarrow as pa

from icefloe.errors import FileError, PermanentFileError
from icefloe.formats import ReadOptions, expanded, parse_whole

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("<Q")


def _send(out: IO[bytes], *frames: bytes) -> None:
    for frame in frames:
        out.write(_LENGTH.pack(len(frame)))
        out.write(frame)
    out.flush()


def _receive(inp: IO[bytes]) -> bytes:
    head = inp.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError("parser pipe closed")
    (size,) = _LENGTH.unpack(head)
    data = inp.read(size)
    if len(data) < size:
        raise EOFError("parser pipe closed")
    return data


def _reply(path: str, options: ReadOptions, limit: int, data: bytes) -> list[bytes]:
    """What a child answers to one request: a status frame, then Arrow IPC for a table."""
    try:
        text = expanded(data, path, options.format, limit)
        if text is None:
            return [pickle.dumps(("expands",))]
        table = parse_whole(text, path, options)
        del text
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return [pickle.dumps(("table",)), sink.getvalue().to_pybytes()]
    except FileError as exc:
        return [pickle.dumps(("error", exc.error_type, str(exc)))]
    except Exception as exc:  # one file's error, never the child's end
        return [pickle.dumps(("error", "UnreadableFile", f"{path}: {exc}"))]


def _serve() -> None:
    """A child (``python -m icefloe.isolation``): parse requests until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and SIGTERM are the parent's to handle
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the pipe
    while True:
        try:
            path, options, limit = pickle.loads(_receive(inp))
            data = _receive(inp)
        except EOFError:
            return
        _send(out, *_reply(path, options, limit, data))


class _Child:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "icefloe.isolation"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C on the terminal goes to the worker, which stops us
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin: IO[bytes] = self.process.stdin
        self.stdout: IO[bytes] = self.process.stdout

    def stop(self) -> None:
        for pipe in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ParserPool:
    """``size`` parser children shared by the read threads of a process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: queue.Queue[_Child] = queue.Queue()
        self._lock = threading.Lock()
        self._started = 0

    def _take(self) -> _Child:
        with self._lock:
            if self._idle.empty() and self._started < self.size:
                self._started += 1
                return _Child()
        return self._idle.get()

    def parse(self, data: bytes, path: str, options: ReadOptions, limit: int) -> pa.Table | None:
        """The file's rows (decompressed by extension), or None when it expands beyond ``limit``.

        Raises the file's :class:`PermanentFileError`; ``ParserCrashed`` when the parser died on it.
        """
        child = self._take()
        try:
            _send(child.stdin, pickle.dumps((path, options, limit)), data)
            reply = pickle.loads(_receive(child.stdout))
            if reply[0] == "table":
                with pa.ipc.open_stream(pa.py_buffer(_receive(child.stdout))) as reader:
                    table: pa.Table = reader.read_all()
        except (EOFError, OSError) as exc:
            try:
                code: int | None = child.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            with self._lock:
                self._started -= 1  # the next _take starts a replacement
            child.stop()
            how = f"signal {-code} ({signal.Signals(-code).name})" if code is not None and code < 0 else f"exit {code}"
            log.warning("parser process died (%s) on %s; replaced", how, path)
            raise PermanentFileError(
                f"{path}: the parser crashed on this file ({how})", error_type="ParserCrashed"
            ) from exc
        except BaseException:
            # Interrupted mid-request: the child's state is unknown, replace it.
            with self._lock:
                self._started -= 1
            child.stop()
            raise
        self._idle.put(child)
        if reply[0] == "expands":
            return None
        if reply[0] == "error":
            raise PermanentFileError(reply[2], error_type=reply[1])
        return table


_POOL: ParserPool | None = None
_POOL_LOCK = threading.Lock()


def shared_pool(size: int) -> ParserPool:
    """The process's parser pool, made on first use (children are started as they are needed)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.size < size:
            _POOL = ParserPool(size)
        return _POOL


def default_size() -> int:
    """One parser child per core: parsing is CPU-bound."""
    return max(1, os.cpu_count() or 2)


if __name__ == "__main__":
    _serve()
