"""Bulk generation: a 10,000-item batch through a real consumer, next to the naive
per-code PNG pipeline, in the same run.

qrq: ``qrq batch submit --template 4 --count N`` (the demo's 4x6 A4 stickers), run
by a fresh ``huey_consumer`` (one process worker) per repeat; wall time from the
submit command to the job's end, the worker's CPU time and peak RSS (VmHWM),
and the sizes of the combined PDF and the ZIP of SVGs. A smaller batch is run
too, to show the worker's memory does not grow with the number of items.

Naive: in a child process, for each code ``qrcode.make(payload)`` (a PIL image),
saved as a PNG file, then every PNG drawn onto the same 4x6 A4 grid with
reportlab's ``drawImage``, the PDF saved at the end.

Usage: python bench/batch.py [--items 10000] [--repeats 3] [--small 1000]
       [--naive-items N]    (default: --items)   [--formats svg|png|svg,png]
Everything lives in a temporary directory, removed at the end. The last line
printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CONSUMER = str(Path(PYTHON).parent / "huey_consumer")
TICKS = os.sysconf("SC_CLK_TCK")


def env_for(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRQ_")}
    return {**env, "QRQ_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}


def qrq(data: Path, *args: str) -> str:
    done = subprocess.run([PYTHON, "-m", "qrq", "--data-dir", str(data), *args], cwd=REPO,
                          env=env_for(data), capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"qrq {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # kB
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_consumer(data: Path) -> tuple[subprocess.Popen, list[int]]:
    log = open(data / "logs" / "bench-consumer.log", "ab")  # noqa: SIM115 (kept open)
    proc = subprocess.Popen([CONSUMER, "huey_app.huey", "-w", "1", "-k", "process", "-d",
                             "0.05", "-m", "0.05", "-b", "1.0"], cwd=REPO,
                            env=env_for(data), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = children(proc.pid)
        if workers:
            time.sleep(0.5)  # the worker and the scheduler processes
            return proc, children(proc.pid)
        time.sleep(0.05)
    raise RuntimeError("the consumer started no worker")


def stop_consumer(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def job_row(data: Path, job_id: str) -> tuple:
    with sqlite3.connect(f"file:{data / 'queue.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("select status, started_at, finished_at, result, error from job "
                          "where id = ?", (job_id,)).fetchone()


def run_qrq(data: Path, items: int, formats: str = "svg") -> dict:
    """One batch of *items* codes on a fresh consumer (the ZIP holding *formats*,
    comma-separated); its figures."""
    proc, pids = start_consumer(data)
    try:
        cpu_before = {pid: cpu_seconds(pid) for pid in pids}
        started = time.monotonic()
        out = qrq(data, "batch", "submit", "--template", "4", "--count", str(items),
                  "-o", "formats=" + json.dumps(formats.split(",")))
        job_id = out.split()[2]
        while True:
            status, began, ended, result, error = job_row(data, job_id)
            if status in ("finished", "failed", "canceled", "expired"):
                break
            time.sleep(0.02)
        wall = time.monotonic() - started
        if status != "finished":
            raise RuntimeError(f"batch {status}: {error}")
        figures = json.loads(result)
        # The child process that ran the job is the one that used the CPU.
        worker = max(pids, key=lambda pid: cpu_seconds(pid) - cpu_before[pid])
        return {"items": items, "wall_s": round(wall, 2),
                "items_per_s": round(items / wall, 1),
                "job_run_s": round(ended - began, 2),
                "worker_cpu_s": round(cpu_seconds(worker) - cpu_before[worker], 2),
                "worker_peak_rss_mb": round(proc_status(worker, "VmHWM") / 1024, 1),
                "encode_s": figures["seconds"]["encode"],
                "outputs_s": figures["seconds"]["outputs"],
                "pdf_bytes": figures["pdf"]["bytes"], "pdf_pages": figures["pdf"]["pages"],
                "zip_bytes": figures["zip"]["bytes"], "completed": figures["completed"]}
    finally:
        stop_consumer(proc)


def naive(items: int, out: Path) -> dict:
    """The per-code PNG pipeline, in this process (run as a child of the benchmark)."""
    import qrcode
    from reportlab.lib.units import mm
    from reportlab.pdfgen.canvas import Canvas

    started, cpu = time.monotonic(), time.process_time()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(1, items + 1):
        image = qrcode.make(f"https://shop.qrcards.example/p/{i}", border=2)
        path = out / f"{i:05d}.png"
        image.save(path)
        paths.append(path)
    canvas = Canvas(str(out / "cards.pdf"), pagesize=(210 * mm, 297 * mm))
    card_w, card_h, size = 210 / 4 * mm, 297 / 6 * mm, 30 * mm
    for n, path in enumerate(paths):
        slot = n % 24
        col, row = slot % 4, slot // 4
        canvas.drawImage(str(path), col * card_w + (card_w - size) / 2,
                         297 * mm - (row + 1) * card_h + (card_h - size) / 2, size, size)
        if slot == 23:
            canvas.showPage()
    canvas.save()
    wall = time.monotonic() - started
    return {"items": items, "wall_s": round(wall, 2), "items_per_s": round(items / wall, 1),
            "cpu_s": round(time.process_time() - cpu, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "png_bytes": sum(p.stat().st_size for p in paths),
            "pdf_bytes": (out / "cards.pdf").stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--naive-items", type=int)
    parser.add_argument("--formats", default="svg",
                        help="what the ZIP holds per code: svg, png or svg,png")
    parser.add_argument("--naive", type=int, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive:
        print(json.dumps(naive(args.naive, args.out)))
        return

    root = Path(tempfile.mkdtemp(prefix="qrq-bench-batch-"))
    try:
        data = root / "data"
        qrq(data, "init", "--demo")
        runs = []
        for i in range(args.repeats):
            runs.append(run_qrq(data, args.items, args.formats))
            print(f"qrq batch {i + 1}/{args.repeats}: {json.dumps(runs[-1])}", flush=True)
        small = run_qrq(data, args.small, args.formats)
        print(f"qrq batch of {args.small}: {json.dumps(small)}", flush=True)
        naive_items = args.naive_items or args.items
        child = subprocess.run([PYTHON, __file__, "--naive", str(naive_items), "--out",
                                str(root / "naive")], cwd=REPO, capture_output=True,
                               text=True, check=True)
        baseline = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"naive per-code PNG pipeline: {json.dumps(baseline)}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    wall = statistics.median(r["wall_s"] for r in runs)
    rate = statistics.median(r["items_per_s"] for r in runs)
    summary = {
        "items": args.items, "repeats": args.repeats,
        "qrq_wall_s_median": wall, "qrq_wall_s_min": min(r["wall_s"] for r in runs),
        "qrq_wall_s_max": max(r["wall_s"] for r in runs),
        "qrq_items_per_s_median": rate,
        "qrq_worker_cpu_s_median": statistics.median(r["worker_cpu_s"] for r in runs),
        "qrq_worker_peak_rss_mb": max(r["worker_peak_rss_mb"] for r in runs),
        "qrq_small_items": args.small,
        "qrq_small_worker_peak_rss_mb": small["worker_peak_rss_mb"],
        "rss_ratio_large_to_small": round(max(r["worker_peak_rss_mb"] for r in runs)
                                          / small["worker_peak_rss_mb"], 2),
        "qrq_pdf_bytes": runs[-1]["pdf_bytes"], "qrq_zip_bytes": runs[-1]["zip_bytes"],
        "naive_items": baseline["items"], "naive_wall_s": baseline["wall_s"],
        "naive_items_per_s": baseline["items_per_s"], "naive_cpu_s": baseline["cpu_s"],
        "naive_peak_rss_mb": baseline["peak_rss_mb"], "naive_png_bytes": baseline["png_bytes"],
        "naive_pdf_bytes": baseline["pdf_bytes"],
        "speedup_items_per_s": round(rate / baseline["items_per_s"], 2),
        "target_under_60s": wall < 60,
        "load_average_at_end": os.getloadavg()[0],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
