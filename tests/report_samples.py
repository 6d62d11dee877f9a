"""Synthetic report inputs for the HTML report tests: a certificate (as ``Certificate.to_json()``
gives it), a gate with its evidence, and a soak document (``harness.html_report``'s shape),
each with a failure, and text that must be escaped."""

from __future__ import annotations

import random
from typing import Any

EVIL = "<script>document.body.dataset.pwned='1'</script>"
FAIL_REPRODUCE = "python /tmp/reports/x/adr032-3-repro.py --seed 11"
SOAK_REPRODUCE = "crashgate soak stage3 --agents 15 --seed 7 --duration 120 --faults every"


def _ratio(point: float, width: float, n: int = 400) -> dict[str, Any]:
    return {"point": point, "low": point - width, "high": point + width, "n": [n, n],
            "aa": {"point": 1.0, "low": 0.97, "high": 1.04},
            "candidate": {"p50_us": 10.0, "p95_us": 14.0, "p99_us": 20.0}}


def certificate() -> dict[str, Any]:
    def row(key: str, number: int, verdict: str, summary: str, measured: dict[str, Any],
            **kw: Any) -> dict[str, Any]:
        return {"key": key, "table": kw.pop("table", "ADR-032 crash safety"), "number": number,
                "scenario": kw.pop("scenario", f"scenario of {key}"), "expected": "stays whole",
                "seed": 11, "seconds": 0.5, "verdict": verdict, "summary": summary,
                "measured": measured, "details": kw.pop("details", []),
                "reproduce": kw.pop("reproduce", None), "attachments": []}

    return {
        "schema": "crashgate.certificate", "schema_version": 2, "backend": "demo?x=1",
        "run_id": "20260101T000000Z-11", "seed": 11, "budget": "quick",
        "started": "2026-01-01T00:00:00Z", "seconds": 12.5, "verdict": "fail",
        "command": "crashgate certify 'demo?x=1' --seed 11 --budget quick",
        "environment": {"python": "CPython 3.11", "os": "Linux"},
        "declaration": {"durability": "power-loss", "capabilities": ["kv", "vector"],
                        "file_format": None, "wire_version": None, "failpoints": [],
                        "metric": None, "notes": {}, "damage": "detects"},
        "rows": [
            row("adr032-1", 1, "pass", "1199 crash states whole",
                {"crash_states": 1199, "states_by_model": {"process": 260, "prefix": 350,
                                                           "subset": 0, "torn": 329,
                                                           "garbage": 260}}),
            row("adr032-2", 2, "pass", "whole after every crash", {"crash_states": 40}),
            row("adr032-3", 3, "fail", f"acknowledged write lost {EVIL}",
                {"crash_states": 7}, reproduce=FAIL_REPRODUCE,
                details=["put k1 acknowledged", f"after recovery: get k1 -> None {EVIL}"],
                scenario=f"Power loss mid-append {EVIL}"),
            row("adr032-4", 4, "unknown", "the check could not run: Timeout", {"seed": 3}),
            row("adr032-5", 5, "n/a", "no lease capability", {}),
            row("adr072-read-latency", 1, "pass", "read latency within 2.0x",
                {"get": _ratio(0.16, 0.01), "scan": _ratio(0.63, 0.02),
                 "query": _ratio(1.7, 0.2), "samples": 1600, "seed": 1,
                 "candidate": "rvf", "baseline": "sqlite"}, table="ADR-072 gates"),
            row("adr072-write-latency", 2, "fail", "put latency 1.64x exceeds 1.5x",
                {"put": _ratio(1.64, 0.2), "upsert": _ratio(0.9, 0.1), "samples": 800},
                table="ADR-072 gates", reproduce="crashgate certify demo --scenario "
                "adr072-write-latency --seed 11"),
        ]}


def gate() -> tuple[dict[str, Any], dict[str, Any]]:
    criteria = [
        {"criterion": "Shadow divergence rate below 0.01% over 7 consecutive days",
         "document": "ADR-072", "verdict": "unknown",
         "figure": "0/46 mismatches, rate < 6.3049% (95%)", "n": 46,
         "missing": "29910 more comparisons without a mismatch would pass"},
        {"criterion": "RVF read latency within 2x of SQLite for all query types",
         "document": "ADR-072", "verdict": "pass", "figure": "0.07 (0.07-0.08)", "n": 200,
         "missing": ""},
        {"criterion": "RVF write latency within 1.5x of SQLite for all operation types",
         "document": "ADR-072", "verdict": "fail", "figure": "put 1.64 (1.58-2.06)", "n": 200,
         "missing": ""},
        {"criterion": f"Zero data corruption incidents {EVIL}", "document": "ADR-072",
         "verdict": "pass", "figure": "0 incidents in 46 checks", "n": 46, "missing": ""},
    ]
    evidence = {"format": "crashgate-evidence/1", "adapter": "stage3", "started": 1000.0,
                "ended": 1060.0, "divergence": {"compared": 46, "mismatches": 0},
                "corruption": {"checks": 46, "incidents": 0},
                "latency": {"read": {"point": 0.072, "low": 0.068, "high": 0.076,
                                     "n": [200, 200],
                                     "aa": {"point": 1.01, "low": 1.0, "high": 1.02}},
                            "write": {"put": _ratio(1.64, 0.25, 200),
                                      "upsert": _ratio(0.8, 0.1, 200)}}}
    return ({"gate": "ADR-072 3 -> 4", "adapter": "stage3", "verdict": "fail",
             "criteria": criteria}, evidence)


def soak(seconds: int = 120) -> dict[str, Any]:
    rng = random.Random(7)
    t = [float(i) for i in range(seconds)]
    faults = [{"name": "kill-writer", "start": 20.0, "end": 23.5, "detail": "SIGKILL writer#1",
               "run": 0},
              {"name": "second-writer", "start": 40.0, "end": 41.0, "detail": "LockHeld",
               "run": 0},
              {"name": "lease-expiry", "start": 60.0, "end": 66.0, "detail": EVIL, "run": 0},
              {"name": "disk-full", "start": 80.0, "end": 84.0, "detail": "ENOSPC", "run": 0},
              {"name": "io-error", "start": 100.0, "end": 100.0, "detail": "EIO once",
               "run": 0}]

    def down(i: int) -> bool:
        return any(f["start"] <= i < f["end"] for f in faults[:1])

    ok = [0.0 if down(i) else 900 + rng.gauss(0, 40) for i in range(seconds)]
    fail = [rng.choice([0, 0, 0, 3]) + (40 if 80 <= i < 84 else 0) for i in range(seconds)]
    info = [15.0 if i == 20 else 0.0 for i in range(seconds)]
    latency = {}
    for op, base in (("put", 1.5), ("get", 0.3), ("q_update", 2.0), ("query", 4.0)):
        p50 = [None if down(i) else base * (1 + rng.random() * 0.2) for i in range(seconds)]
        latency[op] = {"p50": p50,
                       "p99": [None if v is None else v * 4 + rng.random() for v in p50]}
    latency["scan"] = {"p50": [None] * seconds, "p99": [None] * seconds}   # never sampled
    writer1 = [float(i) for i in range(0, 20)]
    writer2 = [float(i) for i in range(24, seconds)]
    resources = [
        {"process": "writer#1", "pid": 101, "t": writer1,
         "rss_mb": [80 + i * 0.5 for i in range(len(writer1))],
         "fds": [12] * len(writer1), "cpu_pct": [50.0] * len(writer1)},
        {"process": "writer#2", "pid": 202, "t": writer2,
         "rss_mb": [82 + i * 0.05 for i in range(len(writer2))],
         "fds": [12 + i // 30 for i in range(len(writer2))], "cpu_pct": [55.0] * len(writer2)},
        {"process": "reader-1", "pid": 303, "t": t, "rss_mb": [60.0] * seconds,
         "fds": [8] * seconds, "cpu_pct": [10.0] * seconds}]
    total = int(sum(ok) + sum(fail) + sum(info))
    g, _ = gate()
    return {
        "format": "crashgate-soak/1", "target": "stage3", "verdict": "fail",
        "summary": "1 violation: a stale read", "command": SOAK_REPRODUCE,
        "reproduce": SOAK_REPRODUCE, "seed": 7, "runs": [0], "shard": [1, 1], "agents": 15,
        "started": 1000.0, "ended": 1000.0 + seconds, "elapsed": float(seconds),
        "ops": {"total": total, "ok": int(sum(ok)), "fail": int(sum(fail)),
                "info": int(sum(info)),
                "by_op": {"put": {"ok": 40000, "fail": 100, "info": 10},
                          "get": {"ok": 50000, "fail": 0, "info": 5}}},
        "faults": faults,
        "timeline": {"bucket_s": 1.0, "t": t,
                     "throughput": {"ok": ok, "fail": fail, "info": info},
                     "latency_ms": latency},
        "resources": resources,
        "leaks": [],
        "violations": [{"kind": "stale-read", "register": "kv:k007",
                        "message": f"read returned an older value than acknowledged {EVIL}",
                        "read": "#12 writer#1/agent 3 get(key='k007') -> 0.writer#1.2.4 "
                                "[10.2, 10.3]",
                        "writes": ["#9 writer#1/agent 2 put(key='k007', 0.writer#1.2.4) ok "
                                   "[9.0, 9.1]",
                                   "#10 writer#1/agent 5 put(key='k007', 0.writer#1.5.1) ok "
                                   "[9.5, 9.6]"]}],
        "checks": {"reads": 50000, "recoveries": 3, "q_reads": 900},
        "gate": g,
    }
