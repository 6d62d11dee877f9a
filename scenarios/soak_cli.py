"""``crashgate soak TARGET`` (a chaos soak of a backend or stage adapter) and ``crashgate merge
DIR...`` (shards' soaks as one report and one gate verdict)."""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import time
from pathlib import Path
from typing import Any

from crashgate.backends import resolve
from crashgate.harness.cli import EXIT_FAIL, EXIT_OK, EXIT_UNKNOWN, UsageError
from crashgate.harness.soak.progress import Progress
from crashgate.harness.soak.report import write_documents
from crashgate.harness.soak.run import SoakSettings
from crashgate.harness.soak.schedule import FAULTS, SCHEDULES, parse_schedule
from crashgate.harness.soak.session import Shard, parse_shard, run_soak, runs_of
from crashgate.harness.soak.summary import evidence_of, merge_docs
from crashgate.harness.verdict import Verdict
from crashgate.scenarios.gates import ADR072, GATES, judge_gate

__all__ = ["add_parser"]

_EPILOG = ("Schedules: " + "; ".join(f"{name} ({', '.join(faults) or 'no faults'})"
                                     for name, faults in SCHEDULES.items())
           + ". Faults: " + ", ".join(FAULTS) + ". A soak of a stage adapter also judges "
           "the gate out of its stage (ADR-072's, or the document it declares) on the soak's "
           "evidence.")
_EXIT = {Verdict.PASS: EXIT_OK, Verdict.FAIL: EXIT_FAIL, Verdict.UNKNOWN: EXIT_UNKNOWN}


def gate_of(evidence: dict[str, Any], stage: int | None,
            document: str | None = None) -> dict[str, Any] | None:
    """The gate out of ``stage`` of ``document`` (the migration the adapter declares; None:
    ADR-072's) judged on the soak's evidence (None when there is none: not a stage adapter,
    or a stage with no gate after it)."""
    document = document or ADR072
    if stage is None or (document, stage, stage + 1) not in GATES:
        return None
    verdict, judged = judge_gate(document, stage, stage + 1, evidence)
    return {"gate": f"{document} {stage} -> {stage + 1}", "verdict": verdict.value,
            "criteria": [{"criterion": c.words, "verdict": j.verdict.value, "figure": j.figure,
                          "n": j.n, "missing": j.missing} for c, j in judged]}


def _finish(doc: dict[str, Any], out: Path) -> int:
    evidence = evidence_of(doc, doc.get("stage"))
    gate = gate_of(evidence, doc.get("stage"), doc.get("migration"))
    if gate is not None:
        doc["gate"] = gate
    write_documents(doc, evidence, out)
    print(f"{doc['target']}: soak {doc['verdict'].upper()}: {doc['summary']}")
    for v in doc["violations"][:5]:
        print(f"  violation: {v['kind']} at {v['register']}: {v['message']}")
        print(f"    read:  {v['read']}")
        for w in v["writes"][:3]:
            print(f"    write: {w}")
    for p in doc["problems"][:5]:
        print(f"  broken fault promise: {p}")
    for leak in doc["leaks"]:
        print(f"  leak: {leak['process']}: {leak['what']}: {leak['detail']}")
    for name, why in doc.get("skipped", {}).items():
        print(f"  not injected: {name}: {why}")
    if gate is not None:
        print(f"  gate {gate['gate']}: {gate['verdict'].upper()}")
    if doc["verdict"] != "pass":
        print(f"  reproduce: {doc['reproduce']}")
    print(f"  report: {out / 'report.html'}")
    return _EXIT[Verdict(doc["verdict"])]


def _soak(args: argparse.Namespace) -> int:
    try:
        schedule = parse_schedule(args.faults, args.fault_interval)
        shard = parse_shard(args.shard) if args.shard else Shard(1, 1)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.print_schedule:
        print("\n".join(schedule.describe(args.duration)))
        return EXIT_OK
    if args.target is None:
        raise UsageError("give the TARGET to soak, e.g. stage3 (or --print-schedule)")
    for name, value, low in (("--agents", args.agents, 1), ("--runs", args.runs, 1),
                             ("--readers", args.readers, 0)):
        if value < low:
            raise UsageError(f"{name} {value}: give {low} or more")
    if args.ops is not None and args.ops < args.agents:
        raise UsageError(f"--ops {args.ops}: give at least one op per agent ({args.agents})")
    if args.duration is not None and args.duration <= 0:
        raise UsageError(f"--duration {args.duration:g}: give a number of seconds above 0")
    if args.dir is not None and not os.path.isdir(args.dir):
        raise UsageError(f"--dir {args.dir}: not a directory; create it first, or leave the "
                         "option out for a temporary directory")
    duration = args.duration if args.duration is not None or args.ops else 120.0
    spec = resolve(args.target)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    runs = runs_of(args.runs, shard)
    if not runs:
        raise UsageError(f"--shard {shard} of --runs {args.runs}: this shard has no run; give "
                         "--runs at least the number of shards")
    limits = (f" --duration {duration:g}" if duration is not None else "") + \
        (f" --ops {args.ops}" if args.ops else "")
    base = (f"crashgate soak {shlex.quote(spec.label)} --agents {args.agents} --seed {seed} "
            f"--runs {args.runs} --faults {shlex.quote(args.faults)} --fault-interval "
            f"{args.fault_interval:g} --readers {args.readers}{limits}")
    command = base + (f" --shard {shard}" if shard.count > 1 else "")
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    suffix = f"-shard-{shard.index}-of-{shard.count}" if shard.count > 1 else ""
    out = Path(args.out) / spec.slug / f"soak-{run_id}{suffix}"
    settings = SoakSettings(spec, args.agents, seed, schedule, duration, args.ops,
                            args.readers)
    progress = Progress()
    print(f"{spec.label}: soaking with {args.agents} agents, runs {runs} of {args.runs}, "
          f"faults {schedule.name!r} every {schedule.interval:g} s; history in "
          f"{out / 'history.jsonl'}", flush=True)
    try:
        doc = run_soak(settings, runs, shard, out, command, base, progress, args.dir)
    finally:
        progress.done()
    return _finish(doc, out)


def _merge(args: argparse.Namespace) -> int:
    docs = []
    for d in args.dirs:
        path = Path(d) / "soak.json"
        try:
            docs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: {exc} (give folders that `crashgate soak` wrote)") from None
    command = "crashgate merge " + " ".join(shlex.quote(d) for d in args.dirs)
    try:
        doc = merge_docs(docs, command)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    doc["stage"] = next((d.get("stage") for d in docs if d.get("stage") is not None), None)
    doc["migration"] = next((d["migration"] for d in docs if d.get("migration")), None)
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(args.out) if args.out else \
        Path(docs[0]["folder"]).parent / f"soak-merged-{run_id}"
    doc["folder"] = str(out)
    return _finish(doc, out)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "soak", help="a chaos soak: concurrent agents, readers and faults on a schedule",
        description="Soak TARGET (a backend or stage adapter) on a real directory: --agents "
        "concurrent agents (threads of one writer process) issue key-value, Q-value, plan "
        "and vector ops, reader processes read beside it, and faults come on a schedule. "
        "Every op is recorded (history.jsonl, appended as it goes) and every read checked "
        "against the history; after every recovery every record is read and checked. Writes "
        "soak.json, soak.md, evidence.json (for crashgate gate --evidence) and report.html; "
        "a stage adapter's soak also judges the gate out of its stage (ADR-072's, or "
        "ARCH-001's for its phase adapters). "
        "Exit 0 no violation, 1 violations, 2 nothing checked, 3 usage error.",
        epilog=_EPILOG)
    p.add_argument("target", nargs="?", help="backend or stage adapter, e.g. stage3")
    p.add_argument("--agents", type=int, default=15, help="concurrent agents (default 15)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds per run (default 120 unless --ops is given)")
    p.add_argument("--ops", type=int, default=None,
                   help="agent ops per run, split evenly between the agents")
    p.add_argument("--seed", type=int, default=None, help="seed (default random; printed)")
    p.add_argument("--faults", default="all",
                   help="a schedule's name or a comma list of faults (default all)")
    p.add_argument("--fault-interval", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between faults (default 10)")
    p.add_argument("--print-schedule", action="store_true",
                   help="print when each fault would come, and exit")
    p.add_argument("--readers", type=int, default=2,
                   help="reader processes beside the writer (default 2; 0 for none)")
    p.add_argument("--runs", type=int, default=1,
                   help="runs of the soak, one after the other, each seeded apart (default 1)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run only the runs r with r %% N == I-1 (merge shards with crashgate "
                   "merge)")
    p.add_argument("--out", default="reports", help="where soak reports go (default reports/)")
    p.add_argument("--dir", default=None,
                   help="where the store's files live during the soak (default: a temporary "
                   "directory)")
    p.set_defaults(func=_soak)
    m = sub.add_parser(
        "merge", help="shards' soaks as one report and one gate verdict",
        description="Merge the folders of `crashgate soak --shard` runs into one soak report "
        "and one gate verdict: counts add, latency histograms add, time spans union. Exit "
        "codes as for soak.")
    m.add_argument("dirs", nargs="+", metavar="DIR", help="folders `crashgate soak` wrote")
    m.add_argument("--out", default=None, help="where the merged report goes (default: beside "
                   "the first folder)")
    m.set_defaults(func=_merge)
