"""Per-file overhead at scale: N tiny JSON-lines files, icefloe side by side with the reference loaders.

For each N (default 1,000, 10,000 and 100,000) this puts N files of 3 rows each (the reference
event schema) under ``s3://landing/tinyN/`` and times, one after the other in the same run (the
machinery of ``run.py``: SeaweedFS and PostgreSQL on loopback, peak RSS of each loader's process
tree polled every 50 ms, every table read back and checked):

- ``refbench.py batched`` (no ledger, one commit) and, with ``--loaders …,duckdb``, DuckDB → Parquet;
- ``icefloe run`` on a fresh ledger (the first run), then ``icefloe run`` again over the same,
  unchanged keys (the no-op run: a full listing, nothing to ingest).

It prints a Markdown table, writes the figures as JSON to ``benchmarks/results/`` and draws
files/s and peak RSS against N (``--plot``, default ``docs/scale.png``; needs matplotlib, the
``bench`` extra).

    .venv/bin/python benchmarks/scale.py                         # 1k, 10k, 100k
    .venv/bin/python benchmarks/scale.py --sizes 1000,10000 --loaders batched,duckdb,icefloe
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # the harness next to this file

ROWS_PER_FILE = 3
LINE = (
    '{"id": %d, "ts": "2025-01-01T00:00:%02d", "user_id": "u%07d", "event_type": "click", "amount": 1.5, '
    '"payload": "p"}\n'
)


def put_tiny(s3: Any, prefix: str, n: int) -> float:
    """N objects of ROWS_PER_FILE lines under ``prefix``, 1,000 per ``dt=`` folder; ids 0..3N-1."""
    started = time.perf_counter()

    def put(i: int) -> None:
        body = "".join(LINE % (i * ROWS_PER_FILE + r, r, i) for r in range(ROWS_PER_FILE))
        s3.put_object(Bucket=bench.LANDING, Key=f"{prefix}dt={i // 1000:05d}/f{i:07d}.jsonl", Body=body.encode())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))
    return time.perf_counter() - started


def noop_run(b: bench.Bench, ds: bench.Dataset) -> bench.Result:
    """``icefloe run`` again on the ledger of the first run (same database and home)."""
    env = b.icefloe_env(f"bench_{ds.name}", b.workdir / "icefloe-home" / ds.name)
    load = list(os.getloadavg())
    m = bench.measure(
        [str(b.args.icefloe), "run", f"icefloe_{ds.name}", "--json"],
        env,
        b.logs / f"noop-{ds.name}",
        b.args.timeout,
        b.svc.pids,
    )
    res = b._result("icefloe no-op", ds, m, files=ds.files, rows=0, nbytes=0)
    res.load_avg_before = load
    try:
        summary = json.loads(m.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        summary = {}
    res.loader_output = summary
    res.internal_seconds = summary.get("duration_seconds")
    if res.status == "OK" and (summary.get("files_new") or summary.get("files_succeeded")):
        res.status, res.note = "WRONG", f"the no-op run ingested something: {summary}"
    return res


def plot(results: list[bench.Result], path: Path, meta: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for loader in dict.fromkeys(r.loader for r in results):
        rows = sorted((r for r in results if r.loader == loader and r.status == "OK"), key=lambda r: r.files)
        if not rows:
            continue
        n = [r.files for r in rows]
        speed.plot(n, [r.files_per_s for r in rows], marker="o", label=loader)
        memory.plot(n, [r.peak_rss_mb for r in rows], marker="o", label=loader)
    speed.axhline(1000, color="grey", linestyle=":", linewidth=1, label="target: 1,000 files/s")
    memory.axhline(500, color="grey", linestyle=":", linewidth=1, label="target: 500 MiB")
    for ax, title, unit in ((speed, "throughput", "files/s"), (memory, "peak RSS (process tree)", "MiB")):
        ax.set_xscale("log")
        ax.set_xlabel("tiny files (3 rows each), N")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    loads = [r.load_avg_before[0] for r in results if r.load_avg_before]
    fig.suptitle(
        f"benchmarks/scale.py, {meta['timestamp']}, 2 cores, 1-min load {min(loads):.1f}-{max(loads):.1f}", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,10000,100000", help="comma-separated N (default 1000,10000,100000)")
    p.add_argument("--loaders", default="batched,icefloe", help="of batched,duckdb,icefloe (default batched,icefloe)")
    p.add_argument("--no-noop", action="store_true", help="skip the second (no-op) icefloe run")
    p.add_argument("--plot", type=Path, default=bench.REPO_ROOT / "docs" / "scale.png", help="PNG to write")
    p.add_argument("--icefloe", type=Path, default=Path(sys.executable).parent / "icefloe")
    p.add_argument("--refbench", type=Path, default=bench.DEFAULT_REFBENCH)
    p.add_argument("--refbench-python", default=None)
    p.add_argument("--ref-s3-request-timeout", type=float, default=60)
    p.add_argument("--timeout", type=float, default=3600, help="seconds before a loader is killed")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--create-args", default="", help="more options for `icefloe ingestion create`")
    p.add_argument("--results-dir", type=Path, default=bench.RESULTS_DIR)
    args = p.parse_args(argv)
    args.sizes = sorted(int(n) for n in args.sizes.split(",") if n.strip())
    args.loaders = [x.strip() for x in args.loaders.split(",") if x.strip()]
    if set(args.loaders) - {"batched", "duckdb", "icefloe"}:
        p.error("--loaders takes batched, duckdb, icefloe")
    args.refbench = args.refbench.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # unwind through the cleanup (services stopped) as Ctrl-C does
        signal.signal(sig, bench._raise_interrupted)
    meta = bench.environment_meta(args, [os.path.relpath(__file__), *argv])
    args.refbench_python = bench.ensure_ref_python(args.refbench_python)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="icefloe-scale-"))).resolve()
    results: list[bench.Result] = []
    generated: dict[int, float] = {}
    try:
        with bench.services(workdir, 60) as svc:
            b = bench.Bench(args, svc, workdir)
            b.svc.create_database(b.ref_db)
            for n in args.sizes:
                ds = bench.Dataset(f"tiny{n}", "jsonl", n, n * ROWS_PER_FILE, ROWS_PER_FILE, "**/*.jsonl")
                bench.log(f"putting {n:,} tiny files under s3://{bench.LANDING}/{ds.name}/")
                generated[n] = round(put_tiny(svc.s3, f"{ds.name}/", n), 1)
                keys = bench.list_objects(svc.s3, bench.LANDING, f"{ds.name}/")
                b.dataset_info[ds.name] = {"files": n, "bytes": sum(s for _, s in keys), "keys": keys}
                for loader in args.loaders:
                    load = list(os.getloadavg())
                    bench.log(f"== {loader} on {ds.name}; load average {load}")
                    if loader == "batched":
                        results.append(b.ref_loader("batched", ds, 1))
                    elif loader == "duckdb":
                        results.append(b.duckdb(ds, 1))
                    else:
                        results.append(b.icefloe(ds, 1))
                        if not args.no_noop:
                            results.append(noop_run(b, ds))
                    for r in results:
                        r.load_avg_before = r.load_avg_before or load
                    r = results[-1]
                    bench.log(f"   -> {r.status} {r.note[:200]}")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    for r in results:
        r.files = int(r.dataset.removeprefix("tiny"))
    report = {"meta": meta, "put_seconds": generated, "results": [r.to_json() for r in results]}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"scale-{meta['timestamp'].replace(':', '')}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(markdown(results, meta))
    if importlib.util.find_spec("matplotlib") is None:
        # The figures are written already; a missing plotting library must not end the run in a traceback.
        bench.log(f"results written to {out}; no plot: matplotlib is not installed (pip install -e '.[bench]')")
    else:
        plot([r for r in results if r.loader != "icefloe no-op"], args.plot, meta)
        bench.log(f"results written to {out}; plot {args.plot}")
    return 0 if all(r.status == "OK" for r in results) else 1


def markdown(results: list[bench.Result], meta: dict[str, Any]) -> str:
    lines = [
        f"Run {meta['timestamp']}, icefloe {meta['icefloe_git']}; command: `{meta['command']}`",
        "",
        "| N | loader | status | seconds | files/s | peak RSS MiB | loader-reported s | load avg | vs batched |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    batched = {r.files: r.seconds for r in results if r.loader == "batched" and r.status == "OK"}
    for r in results:
        ratio = f"{r.seconds / batched[r.files]:.2f}x" if r.seconds and batched.get(r.files) else ""
        lines.append(
            f"| {r.files:,} | {r.loader} | {r.status} | {bench._fmt(r.seconds)} | {bench._fmt(r.files_per_s, 0)} | "
            f"{bench._fmt(r.peak_rss_mb, 0)} | {bench._fmt(r.internal_seconds)} | "
            f"{r.load_avg_before[0] if r.load_avg_before else 0:.1f} | {ratio} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
