"""The parser pool: a crashing file costs itself; the pool never runs dry while threads wait."""

import contextlib
import io
import json
import os
import pickle
import signal
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from icefloe.errors import PermanentFileError, TransientFileError
from icefloe.formats import ReadOptions
from icefloe.isolation import ParserPool

OPTIONS = ReadOptions(format="jsonl")
CRASHER = ('{"x": ' + "[" * 100_000 + "1" + "]" * 100_000 + "}\n").encode()
GOOD = b'{"id": 1}\n{"id": 2}\n'


def outcome(pool: ParserPool, data: bytes) -> str:
    try:
        parsed = pool.parse(data, "s3://b/k.jsonl", OPTIONS, 1 << 25)
    except PermanentFileError as exc:
        return exc.error_type
    assert parsed is not None
    return str(parsed[0].num_rows)


@pytest.fixture
def make_pool() -> Iterator[Callable[[int], ParserPool]]:
    pools: list[ParserPool] = []

    def make(size: int) -> ParserPool:
        pools.append(ParserPool(size))
        return pools[-1]

    yield make
    for pool in pools:
        pool.close()


def test_crashes_cost_their_file_and_the_children_are_replaced(make_pool: Callable[[int], ParserPool]) -> None:
    pool = make_pool(2)
    inputs = [CRASHER, GOOD] * 4
    with ThreadPoolExecutor(8) as threads:
        results = list(threads.map(lambda data: outcome(pool, data), inputs, timeout=120))
    assert results == ["ParserCrashed", "2"] * 4


def test_a_streamed_file_comes_back_in_batches_and_a_crash_is_its_own(make_pool: Callable[[int], ParserPool]) -> None:
    pool = make_pool(1)
    body = b"".join(b'{"id": %d}\n' % i for i in range(200_000))
    streamed = ReadOptions(format="jsonl", block_size=1 << 20)
    assert sum(b.num_rows for b, _ in pool.stream(io.BytesIO(body), "k.jsonl", streamed)) == 200_000
    with pytest.raises(PermanentFileError) as info:
        list(pool.stream(io.BytesIO(CRASHER + body), "k.jsonl", streamed))
    assert info.value.error_type == "ParserCrashed" and "SIGSEGV" in str(info.value)
    batches = pool.stream(io.BytesIO(body), "k.jsonl", streamed)
    next(batches)
    batches.close()  # the caller stopped early: that child is replaced
    assert outcome(pool, GOOD) == "2"


def test_a_group_answers_each_file_in_order_and_a_crash_answers_none(make_pool: Callable[[int], ParserPool]) -> None:
    import gzip

    pool = make_pool(1)
    bomb = gzip.compress(b'{"id": 1}\n' * 200_000)  # 2 MB once expanded: beyond the 1 MB limit
    items = [(GOOD, "a.jsonl"), (b'{"id": \n', "b.jsonl"), (bomb, "c.jsonl.gz"), (GOOD * 3, "d.jsonl")]
    results = pool.parse_group(items, OPTIONS, 1 << 20)
    assert results is not None
    good, bad, expands, more = results
    assert isinstance(good, tuple) and good[0].num_rows == 2 and good[1] == []
    assert isinstance(bad, PermanentFileError) and "b.jsonl" in str(bad)
    assert expands is None
    assert isinstance(more, tuple) and more[0].num_rows == 6
    # The parser dies on one file of a group: which one is unknown, so the group answers None
    # (its files are parsed alone), and the pool goes on with a new child.
    assert pool.parse_group([(GOOD, "a.jsonl"), (CRASHER, "x.jsonl")], OPTIONS, 1 << 25) is None
    assert outcome(pool, GOOD) == "2"


def test_prestarted_children_are_used_and_stop_with_the_pool(make_pool: Callable[[int], ParserPool]) -> None:
    pool = make_pool(2)
    pool.prestart()
    children = [child.process for child in pool._idle]
    assert len(children) == 2 and all(p.poll() is None for p in children)
    with ThreadPoolExecutor(2) as threads:
        assert list(threads.map(lambda data: outcome(pool, data), [GOOD] * 6, timeout=120)) == ["2"] * 6
    assert {child.process.pid for child in pool._idle} == {p.pid for p in children}  # no third child
    pool.close()
    assert all(p.wait(timeout=10) == 0 for p in children)


def test_prestarting_for_one_file_starts_one_child(make_pool: Callable[[int], ParserPool]) -> None:
    # An idle child holds ~50 MB: a run that found one file does not start a second.
    pool = make_pool(2)
    pool.prestart(1)
    assert len(pool._idle) == 1
    assert outcome(pool, GOOD) == "2"
    assert len(pool._idle) == 1


def test_children_stopped_and_continued_mid_answer_keep_their_frames_in_step(
    make_pool: Callable[[int], ParserPool],
) -> None:
    # A profiler or debugger attaching (py-spy pauses each process it samples), or `kill -STOP`,
    # makes a child's write into a full pipe return short; the rest must still arrive.
    pool = make_pool(2)
    pool.prestart()
    pids = [child.process.pid for child in pool._idle]
    line = json.dumps({"id": 1, "name": "x" * 300, "score": 1.5})
    data = ("\n".join([line] * 150) + "\n").encode()  # ~50 KB: a group answer overfills the pipe
    storming = threading.Event()

    def stop_and_continue() -> None:
        while not storming.is_set():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    os.kill(pid, signal.SIGCONT)
            storming.wait(0.002)

    def group(i: int) -> list[int]:
        results = pool.parse_group([(data, f"s3://b/{i}-{k}.jsonl") for k in range(20)], OPTIONS, 1 << 25)
        assert results is not None, "a child was taken for dead"
        return [r[0].num_rows for r in results if isinstance(r, tuple)]

    storm = threading.Thread(target=stop_and_continue, daemon=True)
    storm.start()
    try:
        with ThreadPoolExecutor(2) as threads:
            rows = list(threads.map(group, range(40), timeout=120))
    finally:
        storming.set()
        storm.join()
    assert rows == [[150] * 20] * 40
    assert sorted(child.process.pid for child in pool._idle) == sorted(pids)  # none replaced


@pytest.mark.parametrize("garbage", [b"\x00" * 16, b"not a pickle"], ids=["arrow-frame", "status-frame"])
def test_an_answer_out_of_step_is_a_retried_error_of_its_file_and_the_child_is_replaced(
    make_pool: Callable[[int], ParserPool], garbage: bytes
) -> None:
    # What the parent reads when frames slip (a short write once did it): frames that do not decode.
    pool = make_pool(1)
    pool.prestart()
    (child,) = pool._idle
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as pipe:
        status = pickle.dumps(("table", [])) if garbage.startswith(b"\x00") else b""
        for frame in [status, garbage] if status else [garbage]:
            pipe.write(struct.pack("<Q", len(frame)) + frame)
    own_stdout, child.stdout = child.stdout, os.fdopen(read_end, "rb")  # the parent reads these frames
    with own_stdout, pytest.raises(TransientFileError) as caught:
        pool.parse(GOOD, "s3://b/k.jsonl", OPTIONS, 1 << 25)
    assert caught.value.error_type == "ParserOutOfStep" and "s3://b/k.jsonl" in str(caught.value)
    assert child.process.wait(timeout=10) is not None  # dropped, not given back
    assert outcome(pool, GOOD) == "2"  # a fresh child answers
