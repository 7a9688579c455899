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

import atexit
import contextlib
import io
import logging
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Generator
from typing import IO, Any, Protocol, TypeAlias

import pyarrow as pa

from icefloe.badrecords import BadRecord, parse_text, stream_batches
from icefloe.errors import FileError, PermanentFileError, TransientFileError
from icefloe.formats import LineTooLongError, ReadOptions, expanded, parse_whole, spooled

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("<Q")


# What a group parse gives for one file: its rows and bad records, None (it expands beyond the
# limit: stream it), or its error.
Parsed: TypeAlias = "tuple[pa.Table, list[BadRecord]] | PermanentFileError | None"


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _send(out: IO[bytes], *frames: bytes) -> None:
    for frame in frames:
        _write_all(out, _LENGTH.pack(len(frame)))
        _write_all(out, frame)
    out.flush()


def _write_all(out: IO[bytes], data: bytes) -> None:
    # A buffered write to a pipe returns short when the writer is stopped and continued (SIGSTOP,
    # a profiler or debugger attaching) while the pipe is full: the rest must be written again, or
    # the frames that follow are read out of step.
    view = memoryview(data)
    while view:
        view = view[out.write(view) :]


class _OutOfStep(EOFError):
    """A child's answer did not decode: its frames are out of step, so the child is lost as if it
    had died, but no file is to blame."""


def _status(inp: IO[bytes]) -> Any:
    """The next status frame of a child's answer."""
    frame = _receive(inp)
    try:
        return pickle.loads(frame)
    except Exception as exc:
        raise _OutOfStep(f"undecodable status frame: {exc}") from exc


def _table(inp: IO[bytes]) -> pa.Table:
    """The next Arrow IPC frame of a child's answer."""
    frame = _receive(inp)
    try:
        with pa.ipc.open_stream(pa.py_buffer(frame)) as reader:
            return reader.read_all()
    except pa.ArrowInvalid as exc:
        raise _OutOfStep(f"undecodable Arrow frame: {exc}") from exc


def _receive(inp: IO[bytes]) -> bytes:
    head = inp.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError("parser pipe closed")
    (size,) = _LENGTH.unpack(head)
    data = inp.read(size)
    if len(data) < size:
        raise EOFError("parser pipe closed")
    return data


def _ipc(batches: pa.Table | pa.RecordBatch) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches.schema) as writer:
        writer.write(batches)
    return sink.getvalue()


def _error_status(exc: Exception, path: str) -> tuple[str, str, str]:
    if isinstance(exc, FileError):
        return ("error", exc.error_type, str(exc))
    return ("error", "UnreadableFile", f"{path}: {exc}")  # one file's error, never the child's


def _error_frame(exc: Exception, path: str) -> bytes:
    return pickle.dumps(_error_status(exc, path))


def _parse_one(path: str, options: ReadOptions, limit: int, data: bytes) -> tuple[tuple[Any, ...], pa.Buffer | None]:
    """A fetched file parsed: its status (``table`` with the bad records, ``expands``, ``error``)
    and, for a table, its Arrow IPC."""
    try:
        text = expanded(data, path, options.format, limit)
        if text is None:
            return ("expands",), None
        table, bad = parse_text(text, path, options, parse_whole)
        del text
        return ("table", bad), _ipc(table)
    except Exception as exc:
        return _error_status(exc, path), None


def _parse_whole(out: IO[bytes], path: str, options: ReadOptions, limit: int, data: bytes) -> None:
    """Answer a whole-file request: a status frame, then Arrow IPC for a table."""
    status, ipc = _parse_one(path, options, limit, data)
    _send(out, pickle.dumps(status), *([ipc] if ipc is not None else []))


def _parse_group(inp: IO[bytes], out: IO[bytes], paths: list[str], options: ReadOptions, limit: int) -> None:
    """Answer a group request (one data frame per path): one frame of all statuses, then the
    Arrow IPC of each table in order: a round trip for many tiny files instead of one each."""
    answers = [_parse_one(path, options, limit, _receive(inp)) for path in paths]
    _send(out, pickle.dumps([status for status, _ in answers]), *(ipc for _, ipc in answers if ipc is not None))


class _Frames(io.RawIOBase):
    """The body of a streamed request: data frames until an empty one."""

    def __init__(self, inp: IO[bytes]) -> None:
        super().__init__()
        self.inp, self.pending, self.ended = inp, memoryview(b""), False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending and not self.ended:
            frame = _receive(self.inp)
            self.ended = not frame
            self.pending = memoryview(frame)
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def _parse_stream(inp: IO[bytes], out: IO[bytes], path: str, options: ReadOptions) -> bool:
    """Answer a streamed request: a frame per record batch, then ``done``. False: the input was
    not read to its end (an error), so this child cannot serve another request."""
    frames = _Frames(inp)
    reader = io.BufferedReader(frames, 1 << 20)
    try:
        source: Any = spooled(reader) if options.format == "parquet" else reader
        for batch, bad in stream_batches(source, path, options):
            _send(out, pickle.dumps(("batch", bad)), _ipc(batch))
        if not frames.ended:  # the rest of the input (a reader may close its source at its end)
            while _receive(inp):
                pass
        _send(out, pickle.dumps(("done",)))
        return True
    except Exception as exc:
        _send(out, _error_frame(exc, path))
        return False


def _serve() -> None:
    """A child (``python -m icefloe.isolation``): parse requests until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and SIGTERM are the parent's to handle
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the pipe
    while True:
        try:
            request = pickle.loads(_receive(inp))
            if request[0] == "whole":
                _, path, options, limit = request
                _parse_whole(out, path, options, limit, _receive(inp))
            elif request[0] == "group":
                _, paths, options, limit = request
                _parse_group(inp, out, paths, options, limit)
            elif not _parse_stream(inp, out, request[1], request[2]):
                return
        except EOFError:
            return


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

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()

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
        self._idle: list[_Child] = []
        self._started = 0
        self._closed = False
        self._changed = threading.Condition()  # a child came back, or a slot was freed

    def close(self) -> None:
        """Stop the idle children now, and the busy ones as they come back."""
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.stop()

    def prestart(self, count: int | None = None) -> None:
        """Start children, idle, until ``count`` (at most ``size``; None: ``size``) run: each spends
        ~0.5 s importing pyarrow, which then overlaps the listing and the table's creation instead
        of delaying the first parse."""
        wanted = self.size if count is None else min(count, self.size)
        while True:
            with self._changed:
                if self._closed or self._started >= wanted:
                    return
                self._started += 1
            try:
                child = _Child()
            except BaseException:
                self._free_slot()
                raise
            self._give_back(child)

    def _take(self) -> _Child:
        """An idle child, a new one while fewer than ``size`` run, else wait for one of those."""
        with self._changed:
            while not self._idle and self._started >= self.size:
                self._changed.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1
        try:
            return _Child()
        except BaseException:
            self._free_slot()
            raise

    def _give_back(self, child: _Child) -> None:
        with self._changed:
            if not self._closed:
                self._idle.append(child)
                self._changed.notify()
                return
        child.stop()

    def _free_slot(self) -> None:
        with self._changed:
            self._started -= 1
            self._changed.notify()

    def _drop(self, child: _Child) -> None:
        """Stop ``child``; its slot goes to the next :meth:`_take`, which starts a replacement."""
        child.kill()
        child.stop()
        self._free_slot()

    def _crashed(self, child: _Child, path: str, exc: BaseException) -> FileError:
        """The error of the file whose answer was lost: out of step (retried, as no file is to blame),
        or the child died on it."""
        if isinstance(exc, _OutOfStep):
            self._drop(child)
            log.warning("parser process answered out of step on %s (%s); replaced", path, exc)
            return TransientFileError(f"{path}: the parser's answer was lost ({exc})", error_type="ParserOutOfStep")
        try:
            code: int | None = child.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self._drop(child)
        how = f"signal {-code} ({signal.Signals(-code).name})" if code is not None and code < 0 else f"exit {code}"
        log.warning("parser process died (%s) on %s; replaced", how, path)
        return PermanentFileError(f"{path}: the parser crashed on this file ({how})", error_type="ParserCrashed")

    def parse(
        self, data: bytes, path: str, options: ReadOptions, limit: int
    ) -> tuple[pa.Table, list[BadRecord]] | None:
        """The file's rows (decompressed by extension) and the bad records set aside (salvaging),
        or None when it expands beyond ``limit``.

        Raises the file's :class:`PermanentFileError`; ``ParserCrashed`` when the parser died on it;
        a :class:`TransientFileError` (retried) when its answer came back out of step.
        """
        child = self._take()
        try:
            _send(child.stdin, pickle.dumps(("whole", path, options, limit)), data)
            reply = _status(child.stdout)
            if reply[0] == "table":
                table = _table(child.stdout)
        except (EOFError, OSError) as exc:
            raise self._crashed(child, path, exc) from exc
        except BaseException:
            self._drop(child)  # interrupted mid-request: the child's state is unknown
            raise
        self._give_back(child)
        if reply[0] == "expands":
            return None
        if reply[0] == "error":
            raise _file_error(reply)
        return table, reply[1]

    def parse_group(self, items: list[tuple[bytes, str]], options: ReadOptions, limit: int) -> list[Parsed] | None:
        """:meth:`parse` for several (data, path) in one round trip: each file's rows and bad
        records, None (expands) or its :class:`PermanentFileError`, in order. None when the
        parser died on one of them: which one is unknown, so the caller parses each alone."""
        child = self._take()
        try:
            _send(child.stdin, pickle.dumps(("group", [path for _, path in items], options, limit)))
            for data, _ in items:
                _send(child.stdin, data)
            statuses = _status(child.stdout)
            results: list[Parsed] = []
            for status in statuses:
                if status[0] == "table":
                    results.append((_table(child.stdout), status[1]))
                else:
                    results.append(None if status[0] == "expands" else _file_error(status))
        except (EOFError, OSError) as exc:
            self._drop(child)
            what = f"answered out of step ({exc})" if isinstance(exc, _OutOfStep) else "died"
            log.warning("parser process %s on one of %d files; each is parsed alone", what, len(items))
            return None
        except BaseException:
            self._drop(child)  # interrupted mid-request: the child's state is unknown
            raise
        self._give_back(child)
        return results

    def stream(
        self, body: Readable, path: str, options: ReadOptions
    ) -> Generator[tuple[pa.RecordBatch, list[BadRecord]]]:
        """The record batches of a file too large to read whole, parsed in a child as ``body`` is
        read (by a feeding thread; errors reading ``body`` are raised here, as they were)."""
        child = self._take()
        failed_read: list[BaseException] = []

        def feed() -> None:
            try:
                while True:
                    try:
                        chunk = body.read(1 << 20)
                    except BaseException as exc:
                        failed_read.append(exc)
                        child.kill()  # ends the parent's wait for the child
                        return
                    _send(child.stdin, chunk)
                    if not chunk:
                        return
            except (OSError, ValueError):
                pass  # the child is gone (its pipe broken, or closed by _drop): the reading side says why

        finished = dropped = False
        feeder = threading.Thread(target=feed, name="icefloe-parse-feed", daemon=True)
        try:
            _send(child.stdin, pickle.dumps(("stream", path, options)))
            feeder.start()
            while True:
                reply = _status(child.stdout)
                if reply[0] == "done":
                    finished = True
                    return
                if reply[0] == "error":
                    raise _file_error(reply)
                batches = _table(child.stdout).to_batches()
                if not batches:
                    yield pa.RecordBatch.from_pylist([]), reply[1]
                for i, batch in enumerate(batches):
                    yield batch, reply[1] if i == 0 else []
        except (EOFError, OSError) as exc:
            feeder.join(30)
            if failed_read:
                raise failed_read[0] from None
            dropped = True
            raise self._crashed(child, path, exc) from exc
        finally:
            if finished:
                feeder.join()
                self._give_back(child)
            elif not dropped:
                # An error, or the caller stopped reading: the child is mid-request, replace it.
                self._drop(child)
                if feeder.ident is not None:
                    feeder.join(30)


def _file_error(reply: tuple[Any, ...]) -> PermanentFileError:
    if reply[1] == "LineTooLong":
        return LineTooLongError(reply[2])
    return PermanentFileError(reply[2], error_type=reply[1])


_POOL: ParserPool | None = None
_POOL_LOCK = threading.Lock()


def shared_pool(size: int) -> ParserPool:
    """The process's parser pool, made on first use (children are started as they are needed)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.size < size:
            if _POOL is not None:
                _POOL.close()
            else:
                atexit.register(_close_shared_pool)
            _POOL = ParserPool(size)
        return _POOL


def _close_shared_pool() -> None:
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()


if __name__ == "__main__":
    _serve()
