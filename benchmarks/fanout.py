"""Gateway fan-out: one gateway process serving thousands of SSE subscribers.

``python -m benchmarks.fanout`` starts a private Redis, the simulator, a gateway process
(``streamq serve``) and subscriber processes, then runs two workloads:

- **one job x K subscribers** (default 2,000): one job of 100 deltas at 20/s;
- **many jobs x few subscribers** (default 200 jobs x 5).

Every subscriber is a raw asyncio socket (an ``asyncio.Protocol`` keeping what arrives, with the
time; HTTP/1.1 chunks and SSE frames are taken apart after the stream ended, so that the
subscribers take little of the cores the gateway runs on), in subscriber processes of their
own. The jobs are enqueued and subscribed before the worker starts, so every subscriber follows
them live. Meanwhile another tenant POSTs ``/v1/jobs`` every 50 ms. Prints progress, then the
table; ``--profile FILE.svg`` records the gateway with py-spy during the first workload
(``FILE.raw``: py-spy's raw stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import psutil  # type: ignore[import-untyped]
from redis.asyncio import Redis
from tests.harness.processes import clean_environment, python_command, spawn, stop

from benchmarks.measure import cpu_seconds
from benchmarks.processes import LONG_START, listening
from streamq.core.keys import Keys
from streamq.core.request import chat_messages
from streamq.dev.local_redis import LocalRedis, free_port
from streamq.dev.simulator import simulated_text
from streamq.gateway.memory import CHECK_SECONDS

TOKEN_A = "fanout-bench-tenant-a-0001"
TOKEN_B = "fanout-bench-tenant-b-0002"
DELTAS, RATE = 100, 20


# --- subscriber processes ------------------------------------------------------------------


class _Subscriber(asyncio.Protocol):
    """One SSE connection. While the stream runs it only keeps what arrives, stamped with the
    time, so that the subscriber processes take as little as they can of the cores the gateway
    runs on; the HTTP/1.1 chunks and SSE frames are taken apart once the stream has ended
    (:meth:`result`). Then it has a digest of the entry ids it got, in order (compared with the
    job's stream in Redis after), the text of the job's last attempt (a worker's retry starts
    with a ``reset`` entry) and each entry's lag, from its id's time to its arrival."""

    def __init__(self, job_id: str, expected: str) -> None:
        self.job_id, self.expected = job_id, expected
        self.head = b""
        self.head_done = asyncio.get_running_loop().create_future()
        self.done = asyncio.get_running_loop().create_future()
        self.received: list[tuple[int, bytes]] = []  # (ms since the epoch, bytes) of the body
        self.tail = b""  # the body's last 5 bytes so far
        self.lags: list[int] = []
        self.frames = 0

    def data_received(self, data: bytes) -> None:
        if not self.head_done.done():
            self.head += data
            head, sep, data = self.head.partition(b"\r\n\r\n")
            if not sep:
                return
            self.head_done.set_result(head.split(b" ", 2)[1])
        self.received.append((time.time_ns() // 1_000_000, data))
        # The body's last chunk (an SSE frame ends in "\n\n", so a data chunk cannot end so),
        # which may come split over two reads.
        self.tail = (self.tail + data)[-5:]
        if self.tail == b"0\r\n\r\n" and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def result(self) -> list[Any]:
        """[job id, digest of the ids it got, whether its text and sequence were exact]."""
        ids = hashlib.sha256()
        buffer = body = b""  # chunked bytes, SSE bytes not yet taken apart
        texts: list[str] = []
        seq, exact, ended = -1, True, False
        for now, data in self.received:
            buffer += data
            while True:  # chunked: SIZE\r\nDATA\r\n
                line, sep, rest = buffer.partition(b"\r\n")
                if not sep:
                    break
                size = int(line, 16)
                if len(rest) < size + 2:
                    break
                body += rest[:size]
                buffer = rest[size + 2 :]
                if size == 0:
                    break
            *blocks, body = body.split(b"\n\n")
            for block in blocks:
                if b"\ndata: " not in block or not block.startswith(b"id: "):
                    continue  # retry, keep-alive; a queued frame (a place in line, not an entry)
                self.frames += 1
                lines = block.split(b"\n")
                entry_id = lines[0][4:]
                ids.update(entry_id + b"\n")
                event = json.loads(lines[2][6:])
                self.lags.append(now - int(entry_id.split(b"-")[0]))
                if event["type"] == "reset":  # a new attempt: what the earlier ones said is void
                    texts, seq = [], -1
                if event["seq"] != seq + 1:
                    exact = False
                seq = event["seq"]
                if event["type"] == "delta":
                    texts.append(event["text"])
                elif event["type"] in ("done", "error", "cancelled"):
                    exact, ended = exact and event["type"] == "done", True
        text_ok = exact and ended and "".join(texts) == self.expected
        return [self.job_id, ids.hexdigest(), text_ok]


async def _subscribe(port: int, jobs: list[tuple[str, str]], count: int) -> None:
    """``count`` subscribers over ``jobs`` (id, prompt), round robin; one JSON line when all
    heads are in, one when all streams ended, one with the results once taken apart, and the
    CPU it took while they ran (and to take their bytes apart after) once told to go."""
    loop = asyncio.get_running_loop()
    subscribers = []
    for i in range(count):
        job_id, prompt = jobs[i % len(jobs)]
        expected = simulated_text(chat_messages(prompt), length=DELTAS)
        transport, sub = await loop.create_connection(
            functools.partial(_Subscriber, job_id, expected), "127.0.0.1", port
        )
        transport.write(
            f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: gw\r\n"
            f"Authorization: Bearer {TOKEN_A}\r\n\r\n".encode()
        )
        subscribers.append((transport, sub))
    statuses = await asyncio.gather(*(sub.head_done for _, sub in subscribers))
    print(json.dumps({"ready": [s.decode() for s in statuses].count("200")}), flush=True)
    live = cpu_seconds(os.getpid())
    await asyncio.gather(*(sub.done for _, sub in subscribers))
    live = cpu_seconds(os.getpid()) - live
    print(json.dumps({"done": True}), flush=True)  # the measured window ends here
    parsing = cpu_seconds(os.getpid())
    got = [sub.result() for _, sub in subscribers]
    parsing = cpu_seconds(os.getpid()) - parsing
    frames = sum(sub.frames for _, sub in subscribers)
    lags = [lag for _, sub in subscribers for lag in sub.lags]
    print(json.dumps({"got": got, "frames": frames, "lags": lags}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # hold, then go
    for transport, _ in subscribers:
        transport.close()
    print(json.dumps({"cpu": live, "parsing": parsing}), flush=True)


# --- the orchestrator ----------------------------------------------------------------------


class Bench:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.redis_server = LocalRedis().start()
        self.redis = Redis.from_url(self.redis_server.url)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = clean_environment(
            {
                "REDIS_URL": self.redis_server.url,
                "OPENAI_API_KEY": "unused",
                "STREAMQ_GATEWAY_TOKENS": f"{TOKEN_A}=a,{TOKEN_B}=b",
                "STREAMQ_GATEWAY_MAX_STREAMS": "off",
                "STREAMQ_GATEWAY_RATE_LIMIT": "off",
                "STREAMQ_CONCURRENCY": "1000",
            }
        )

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"{name}.log"
        self.procs[name] = spawn(args, log=log, env=self.env, cwd=self.log_dir)
        return self.procs[name]

    async def aclose(self) -> None:
        for process in self.procs.values():
            stop(process)
        await self.redis.aclose()
        self.redis_server.stop()


async def _gateway_redis_connections(bench: Bench, pid: int) -> int:
    """Clients in Redis's CLIENT LIST whose address is one of the gateway's sockets."""
    port = int(bench.redis_server.url.rsplit(":", 1)[1].split("/")[0])
    mine = {
        f"{c.laddr.ip}:{c.laddr.port}"
        for c in psutil.Process(pid).net_connections("tcp")
        if c.raddr and c.raddr.port == port
    }
    return sum(1 for client in await bench.redis.client_list() if client["addr"] in mine)


async def _stream_digests(bench: Bench, job_ids: list[str]) -> tuple[dict[str, str], int]:
    """Per job, the digest of its stream's entry ids in Redis (what every subscriber should
    have got, in order); and how many jobs the worker started more than once."""
    digests, retried = {}, 0
    for job_id in job_ids:
        entries = await bench.redis.xrange(Keys("streamq").events(job_id))
        digest = hashlib.sha256()
        for entry_id, fields in entries:
            digest.update(entry_id + b"\n")
            retried += fields.get(b"type") == b"reset"
        digests[job_id] = digest.hexdigest()
    return digests, retried


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _workload(
    bench: Bench, gw_port: int, sim_url: str, jobs: int, per_job: int, processes: int,
    profile: str | None,
) -> dict[str, Any]:  # fmt: skip
    label = f"{jobs} job(s) x {per_job} subscribers"
    print(f"== {label}", flush=True)
    gateway = psutil.Process(bench.procs["gateway"].pid)
    base = f"http://127.0.0.1:{gw_port}"
    paced = {"simulator": {"tokens_per_second": RATE, "reply_tokens": DELTAS}}
    async with httpx2.AsyncClient(base_url=base, timeout=60) as http:
        specs = []
        for i in range(jobs):
            prompt = f"fan-out {jobs} {i}"
            body = {"messages": chat_messages(prompt), "extra_body": paced}
            reply = await http.post("/v1/jobs", json=body, headers=_auth(TOKEN_A))
            specs.append((reply.json()["id"], prompt))
        rss_before = gateway.memory_info().rss
        total = jobs * per_job
        subs = []
        for k in range(processes):
            share = specs[k::processes] if jobs >= processes else specs
            count = total // processes + (k < total % processes)
            args = ["-m", "benchmarks.fanout", "subscribe", str(gw_port), json.dumps(share)]
            subs.append(
                await asyncio.create_subprocess_exec(
                    *python_command(*args, str(count)),
                    env=bench.env,
                    cwd=bench.log_dir,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=2**28,
                )
            )
        ready = [json.loads(await _line(p)) for p in subs]
        print(f"   {sum(r['ready'] for r in ready)}/{total} subscribed", flush=True)
        rss_connected = gateway.memory_info().rss
        cpu0 = sum(gateway.cpu_times()[:2])
        worker = bench.start("worker", ["-m", "streamq", "worker"])
        spy = None
        if profile:
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"), "record", "-o", profile,
                "-f", "raw" if profile.endswith(".raw") else "flamegraph",
                "--pid", str(gateway.pid), "--nonblocking", "-d", "12",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        posts: list[float] = []
        slow_posts: list[str] = []  # over the target: when (after the worker started), how long
        phase0 = time.monotonic()
        peak = [rss_connected]
        conns: list[int] = []
        finished = [asyncio.ensure_future(_line(p)) for p in subs]

        stop_posting = asyncio.Event()  # a flag, not a cancel: redis-py may swallow one

        async def other_tenant() -> None:
            tiny = {"simulator": {"reply_tokens": 1}}
            while not stop_posting.is_set():
                began = time.monotonic()
                body = {"messages": chat_messages("other"), "extra_body": tiny}
                await http.post("/v1/jobs", json=body, headers=_auth(TOKEN_B))
                posts.append(time.monotonic() - began)
                if posts[-1] > 0.1:
                    slow_posts.append(f"{began - phase0:.1f} s: {posts[-1] * 1000:.0f} ms")
                peak[0] = max(peak[0], gateway.memory_info().rss)
                if len(posts) % 20 == 5:
                    conns.append(await _gateway_redis_connections(bench, gateway.pid))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_posting.wait(), 0.05)

        tenant_b = asyncio.create_task(other_tenant())
        try:
            for line in finished:
                await line  # every stream ended: the POSTs and the gateway's CPU stop here
        finally:
            stop_posting.set()
            [posting] = await asyncio.gather(tenant_b, return_exceptions=True)
        if isinstance(posting, BaseException):
            print(f"   the other tenant's POSTs stopped early: {posting!r}", flush=True)
        cpu = sum(gateway.cpu_times()[:2]) - cpu0
        print(f"   {len(posts)} POSTs; over 100 ms: {', '.join(slow_posts) or 'none'}", flush=True)
        results = [json.loads(await _line(p)) for p in subs]
        for p in subs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
        sub_cpu = sub_parsing = 0.0
        for p in subs:
            spent = json.loads(await _line(p))
            sub_cpu, sub_parsing = sub_cpu + spent["cpu"], sub_parsing + spent["parsing"]
        for p in subs:
            await p.wait()
        stop(worker)
        if spy is not None:
            await spy.wait()
        # Given back? The gateway's lowest RSS in the seconds after every subscriber has gone
        # (it gives memory back within gateway/memory.py's CHECK_SECONDS of a crowd leaving).
        rss_after = gateway.memory_info().rss
        for _ in range(int((CHECK_SECONDS * 2 + 1) / 0.5)):
            await asyncio.sleep(0.5)
            rss_after = min(rss_after, gateway.memory_info().rss)
    lags = [lag for r in results for lag in r["lags"]]
    frames = sum(r["frames"] for r in results)
    got = [g for r in results for g in r["got"]]
    digests, retried = await _stream_digests(bench, [job_id for job_id, _ in specs])
    exact = sum(digests[job_id] == digest for job_id, digest, _ in got)
    text_exact = sum(text_ok for _, _, text_ok in got)
    print(f"   exact: {exact}/{total} by ids, {text_exact} by text; {retried} retries", flush=True)
    return {
        "workload": label,
        "subscribers": total,
        "exact": exact,
        "text_exact": text_exact,
        "retried": retried,
        "lag_p50_ms": _pct(lags, 0.5),
        "lag_p99_ms": _pct(lags, 0.99),
        "redis_connections": max(conns, default=0),
        "cpu_us_per_subscriber_event": cpu / frames * 1e6,
        "subscriber_cpu_us_per_event": sub_cpu / frames * 1e6,
        "subscriber_parsing_us_per_event": sub_parsing / frames * 1e6,
        "rss_kb_per_subscriber": (max(peak[0], rss_connected) - rss_before) / total / 1024,
        "rss_mib": [round(x / 2**20, 1) for x in (rss_before, peak[0], rss_after)],
        "post_p50_ms": _pct(posts, 0.5) * 1000,
        "post_p99_ms": _pct(posts, 0.99) * 1000,
        "posts": len(posts),
    }


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _line(process: asyncio.subprocess.Process) -> bytes:
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line:
        raise RuntimeError("a subscriber process died (see its stderr)")
    return line


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    log_dir = Path(tempfile.mkdtemp(prefix="streamq-fanout-"))
    print(f"logs in {log_dir}", flush=True)
    bench = Bench(log_dir)
    try:
        sim_port, gw_port = free_port(), free_port()
        bench.start("simulator", ["-m", "streamq", "simulate", "--port", str(sim_port)])
        bench.start("gateway", ["-m", "streamq", "serve", "--port", str(gw_port)])
        await listening(sim_port, "the simulator", timeout=LONG_START)
        await listening(gw_port, "the gateway", timeout=LONG_START)
        sim_url = f"http://127.0.0.1:{sim_port}/v1"
        bench.env["OPENAI_BASE_URL"] = sim_url
        rows = [
            await _workload(bench, gw_port, sim_url, 1, args.subscribers, 2, args.profile),
            await _workload(bench, gw_port, sim_url, args.jobs, args.per_job, 2, None),
        ]
    finally:
        await bench.aclose()
    return rows


FIGURES = [
    ("subscribers", "subscribers", "{:.0f}"),
    (
        "exact",
        "all exact (subscribers that got the job's stream entries, each once, in order)",
        "{:.0f}",
    ),
    ("text_exact", "... and whose job's text (its last attempt) was exact", "{:.0f}"),
    (
        "retried",
        "attempts the worker started again (a `reset` entry; load on the worker)",
        "{:.0f}",
    ),
    ("lag_p50_ms", "lag Redis entry → subscriber, p50 (ms)", "{:.0f}"),
    ("lag_p99_ms", "lag Redis entry → subscriber, p99 (ms) [≤ 250]", "{:.0f}"),
    ("redis_connections", "Redis connections held by the gateway [≤ 8]", "{:.0f}"),
    ("cpu_us_per_subscriber_event", "gateway CPU per subscriber-event (µs) [≤ 15]", "{:.1f}"),
    ("rss_kb_per_subscriber", "gateway RSS per subscriber (KB) [≤ 32]", "{:.1f}"),
    ("rss_mib", "gateway RSS before / peak / after they left (MiB)", "{}"),
    ("post_p50_ms", "other tenant's POST /v1/jobs, p50 (ms)", "{:.1f}"),
    ("post_p99_ms", "other tenant's POST /v1/jobs, p99 (ms) [≤ 100]", "{:.1f}"),
    ("subscriber_cpu_us_per_event", "subscriber clients' CPU per event while live (µs)", "{:.1f}"),
    ("subscriber_parsing_us_per_event", "... and to parse it after (µs)", "{:.1f}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| figure | " + " | ".join(r["workload"] for r in rows) + " |"]
    lines.append("|---|" + "---|" * len(rows))
    for key, name, fmt in FIGURES:
        lines.append(f"| {name} | " + " | ".join(fmt.format(r[key]) for r in rows) + " |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "subscribe":
        port, jobs, count = int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
        asyncio.run(_subscribe(port, [tuple(j) for j in jobs], count))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=2000, help="of the one job")
    parser.add_argument("--jobs", type=int, default=200, help="jobs of the second workload")
    parser.add_argument("--per-job", type=int, default=5, help="their subscribers each")
    parser.add_argument("--profile", help="py-spy flame graph of the gateway (.svg)")
    parser.add_argument("--json", help="write every figure here too")
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"(median {statistics.median(r['lag_p99_ms'] for r in rows):.0f} ms of the p99 lags)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
