"""Analytics commands: compute a time-based report, list cached reports, write demo data."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import click

from qrq.analytics import cache as analytics_cache
from qrq.analytics.query import PERIODS, parse_query
from qrq.analytics.scans import write_demo_databases
from qrq.analytics.submit import enqueue_report
from qrq.cli.base import (
    NonEmptyPath,
    echo_json,
    echo_table,
    get_queue,
    get_settings,
    json_option,
    main,
)
from qrq.cli.jobs import wait_finished, wait_options
from qrq.errors import ValidationError
from qrq.humanize import format_bytes
from qrq.queue import jobs

_OPTION_OF = {"from": "--from", "to": "--to", "tz": "--tz", "domain": "--domain",
              "template_id": "--template-id", "period": "--period"}
BYTES_PER_SCAN = 240  # a demo database with its four indexes, measured


@main.group()
def analytics() -> None:
    """Time-based scan analytics across the scan databases."""


@analytics.command("run")
@click.option("--period", type=click.Choice(PERIODS), default="daily", show_default=True)
@click.option("--from", "start", metavar="YYYY-MM-DD", help="First day (default: a range "
              "ending today: 30 days, 13 weeks or 12 months).")
@click.option("--to", "end", metavar="YYYY-MM-DD", help="Last day (default: today).")
@click.option("--tz", default="UTC", show_default=True, help="Time zone of the buckets.")
@click.option("--domain", help="Only scans of this domain.")
@click.option("--template-id", type=click.IntRange(min=1), help="Only scans of this template.")
@click.option("--refresh", is_flag=True, help="Recompute even if a fresh result is cached.")
@click.option("--inline", is_flag=True, help="Compute in this process instead of a job "
              "(no consumer needed); the result is cached all the same.")
@wait_options(timeout=900)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def analytics_run(period: str, start: str | None, end: str | None, tz: str,
                  domain: str | None, template_id: int | None, refresh: bool, wait: bool,
                  inline: bool, timeout: float, as_json: bool) -> None:
    """Compute (or fetch from the cache) scans and unique visitors per day, week or
    month, with the top templates, domains, countries and devices, and print them.

    Example: qrq analytics run --period weekly --tz Europe/Berlin --wait
    """
    raw = {"period": period, "from": start, "to": end, "tz": tz, "domain": domain,
           "template_id": str(template_id) if template_id else None}
    raw = {k: v for k, v in raw.items() if v is not None}
    try:
        query = parse_query(raw)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint=_OPTION_OF.get(exc.field)) from None
    huey = get_queue()
    if inline:
        _print(_compute_here(huey, query), as_json)
        return
    outcome = analytics_cache.request_report(
        huey.storage, query, raw, lambda job_id: enqueue_report(query, job_id, None),
        refresh=refresh)
    if outcome["status"] == "computing":
        verb = "queued" if outcome["started"] else "joined the running"
        click.echo(f"{verb} job {outcome['job_id']} (cache key {outcome['cache_key']})",
                   err=as_json)
        if not wait:
            return
        job = wait_finished(huey, outcome["job_id"], "computing", timeout)
        outcome = analytics_cache.fresh(huey.storage, query.key)
        if outcome is None:  # finished, but the cache row is gone: use the job's result
            outcome = {"result_json": json.dumps(jobs.public_view(job)["result"]),
                       "computed_at": job["started_at"]}
    result = {**json.loads(outcome["result_json"]),
              "computed_at": jobs.iso(outcome["computed_at"])}
    _print(result, as_json)


def _compute_here(huey, query) -> dict:
    started = time.time()
    with click.progressbar(length=100, label="reading", show_percent=True) as bar:
        done = [0]

        def report(percent: float, stage: str) -> None:
            bar.label = stage
            bar.update(int(percent) - done[0])
            done[0] = int(percent)

        result = analytics_cache.compute_report(huey.storage, huey.settings, query,
                                                progress=report)
        bar.update(100 - done[0])
    return {**result, "computed_at": jobs.iso(started)}


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    params, dbs = result["params"], result["databases"]
    filters = "".join(f", {k} {params[k]}" for k in ("domain", "template_id") if params[k])
    click.echo(f"{params['period']} in {params['tz']}, {params['from']} to {params['to']}"
               f"{filters}: {dbs['read']} of {dbs['found']} databases, computed "
               f"{result.get('computed_at')} in {result['seconds']} s")
    click.echo(f"{'bucket':<12} {'scans':>12} {'visitors':>12}")
    for row in result["series"]:
        click.echo(f"{row['label']:<12} {row['scans']:>12,} {row['visitors']:>12,}")
    click.echo(f"{'total':<12} {result['totals']['scans']:>12,}")
    for name, key in (("templates", "template_id"), ("domains", "domain"),
                      ("countries", "country"), ("devices", "device")):
        top = ", ".join(f"{row[key]} ({row['scans']:,})" for row in result["top"][name])
        click.echo(f"top {name}: {top or '-'}")
    for warning in result["warnings"]:
        click.echo(f"warning: {warning}", err=True)


@analytics.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@json_option
def analytics_list(limit: int, as_json: bool) -> None:
    """List cached reports, most requested first.

    Example: qrq analytics list --json
    """
    now = time.time()
    found = analytics_cache.list_reports(get_queue().storage, limit)
    if as_json:  # as GET /api/analytics/reports answers
        echo_json({"reports": [
            {**r, "fresh": bool(r["expires_at"] and r["expires_at"] > now),
             **{key: jobs.iso(r[key]) for key in ("computed_at", "expires_at", "requested_at")}}
            for r in found]})
        return
    if not found:
        click.echo("no cached reports; compute one: qrq analytics run")
        return
    rows = []
    for report in found:
        p = report["params"]
        state = ("fresh" if report["expires_at"] and report["expires_at"] > now
                 else "stale" if report["computed_at"] else "none")
        filters = " ".join(f"{k}={p[k]}" for k in ("domain", "template_id") if p[k])
        rows.append((report["cache_key"][:12], p["period"], p["tz"],
                     f"{p['from']}..{p['to']}", state, report["requests"],
                     jobs.iso(report["computed_at"]), filters))
    echo_table(("key", "period", "tz", "range", "state", "requests", "computed", "filters"),
               rows, right=("requests",))


@main.group()
def demo() -> None:
    """Write demo data."""


@demo.command("analytics")
@click.option("--dbs", type=click.IntRange(1, 10_000), default=101, show_default=True,
              help="Scan databases to write.")
@click.option("--scans", type=click.IntRange(0, 100_000_000), default=10_000,
              show_default=True, help="Scans per database.")
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help="Days of traffic, ending now.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-j", "--processes", type=click.IntRange(1, 64), default=os.cpu_count() or 1,
              show_default=True, help="Databases written at once.")
@click.option("--out", type=NonEmptyPath(file_okay=False, path_type=Path),
              help="Directory (default: the analytics_dbs setting if it is a directory, "
                   "else <data>/analytics).")
def demo_analytics(dbs: int, scans: int, days: int, seed: int, processes: int,
                   out: Path | None) -> None:
    """Write realistic scan databases (skewed templates and domains, daily and weekly
    rhythms, returning visitors) as scans-000.db, scans-001.db, ...

    Example: qrq demo analytics --dbs 101 --scans 100000
    """
    settings = get_settings()
    if out is None:
        location = settings.analytics_dbs.strip() or "analytics"
        out = (settings.data_dir / "analytics" if any(c in location for c in "*?[")
               else settings.data_dir / location)
    out.mkdir(parents=True, exist_ok=True)
    need = dbs * scans * BYTES_PER_SCAN
    free = shutil.disk_usage(out).free
    if need > free * 0.9:
        raise click.ClickException(f"{dbs} x {scans:,} scans need about {format_bytes(need)}; "
                                   f"{format_bytes(free)} are free in {out}")
    started = time.perf_counter()
    # In hundredths of a database: each one reports its steps, so a few large ones move too.
    with click.progressbar(length=dbs * 100, label=f"writing {dbs} databases") as bar:
        def advance(done: float) -> None:
            bar.update(int(done * 100) - bar.pos)

        write_demo_databases(out, dbs, scans, days, seed, processes, progress=advance)
    click.echo(f"wrote {dbs} databases x {scans:,} scans to {out} in "
               f"{time.perf_counter() - started:.1f} s")
    others = [p for p in out.glob("*.db") if not p.name.startswith("scans-")
              or not p.stem[6:].isdigit() or int(p.stem[6:]) >= dbs]
    if others:
        click.echo(f"note: {len(others)} other .db file(s) in {out} are read too "
                   f"(e.g. {others[0].name})")
