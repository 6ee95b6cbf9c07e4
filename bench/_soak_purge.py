"""Retention for bench/soak.py, in a process of its own as the consumer's periodic task runs.

``python bench/_soak_purge.py DATA_DIR --interval S --age S --mode qrq|scan`` purges the
data directory's finished jobs that ended more than ``--age`` seconds ago, every
``--interval`` seconds, and prints one JSON line per purge.

* ``qrq``: ``qrq.queue.retention.purge_jobs`` as the hourly ``retention.purge`` task calls it,
  which deletes each purged job's artifacts with a glob of the artifacts directory.
* ``scan``: the same ``purge_jobs`` for the records, but pointed at an empty stand-in
  directory, then ``qrq.queue.retention.purge_stale`` (also part of the hourly task) deletes the
  artifacts of jobs that are gone in one pass over the directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from _proc import exit_on_sigterm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("--interval", type=float, default=20.0)
    parser.add_argument("--age", type=float, default=30.0)
    parser.add_argument("--mode", choices=["qrq", "scan"], default="scan")
    args = parser.parse_args(argv)
    exit_on_sigterm()

    os.environ["QRQ_DATA_DIR"] = args.data_dir
    from qrq.artifacts import DirectoryStore, open_store
    from qrq.config import load_settings
    from qrq.queue import huey
    from qrq.queue.retention import purge_jobs, purge_stale

    huey.init(load_settings())  # the queue is built from settings before anything uses it
    storage, artifacts = huey.storage, open_store(huey.settings)
    stand_in = Path(tempfile.mkdtemp(prefix="qrq-bench-soak-no-artifacts-"))
    try:
        while True:
            began = time.perf_counter()
            purged = swept = None
            try:
                if args.mode == "qrq":
                    purged = purge_jobs(storage, artifacts, args.age, ("finished",))
                else:
                    purged = purge_jobs(storage, DirectoryStore(stand_in), args.age, ("finished",))
                    swept = purge_stale(storage, artifacts, grace=args.age)["orphan_artifacts"]
                error = None
            except Exception as exc:  # reported, and the next round tries again
                error = "".join(traceback.format_exception(exc))
            took = time.perf_counter() - began
            print(json.dumps({"t": time.time(), "purged": purged, "artifacts_deleted": swept,
                              "seconds": round(took, 3), "error": error}), flush=True)
            time.sleep(max(0.0, args.interval - took))
    finally:
        stand_in.rmdir()


if __name__ == "__main__":
    sys.exit(main())
