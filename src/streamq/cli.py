"""The ``streamq`` command line: worker, enqueue, tail, cancel, simulate, serve, demo."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import socket
import sys
import warnings
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

from streamq.admin import queries
from streamq.admin import text as admin_text
from streamq.client import StreamQ
from streamq.core import metrics
from streamq.core.connections import redis_from_url
from streamq.core.events import Error, event_to_dict, is_terminal
from streamq.core.exceptions import ConfigError, InvalidRequest, JobFailed, StreamQError
from streamq.core.garbage_collection import restart_on_c_allocator
from streamq.core.keys import check_job_id
from streamq.core.logs import configure_logging
from streamq.core.settings import LOG_FORMATS, LOG_LEVELS, Settings, UnknownSettingWarning
from streamq.core.version import __version__
from streamq.terminal import EXIT_JOB_FAILED, print_text

EXIT_USAGE = 2
ON_RESTART = ("exit", "final")
EXIT_INTERRUPTED = 130
UVICORN_STARTUP_FAILURE = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and args.run is run_serve:  # the gateway as a process of its own
        restart_on_c_allocator()  # so that what a crowd of event streams freed goes back
    settings: Settings | None = None
    try:
        settings = load_settings(args.env_file)
        if args.log_level:
            settings = settings.replace(log_level=args.log_level.upper())
        elif args.run is run_demo:  # the demo's terminal is for the answer, not worker logs
            settings = settings.replace(log_level="WARNING")
        if args.log_format:
            settings = settings.replace(log_format=args.log_format)
        configure_logging(settings.log_level, settings.log_format)
        code: int = args.run(args, settings)
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout's reader left (`| head`): stop quietly, as Unix tools do
        silence_stdout()
        return 0
    except JobFailed as exc:
        print(f"streamq: {exc}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except StreamQError as exc:
        print(f"streamq: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RedisError as exc:
        where = redact(settings.redis_url) if settings else "Redis"
        print(f"streamq: error: cannot use Redis at {where}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # not Redis's (redis-py wraps its own): say what failed, as the OS did
        print(f"streamq: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def load_settings(env_file: str | None) -> Settings:
    """:meth:`Settings.from_env`, its warnings (a misspelled variable) printed as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownSettingWarning)
        settings = Settings.from_env(env_file=env_file)
    for warning in caught:
        if issubclass(warning.category, UnknownSettingWarning):
            print(f"streamq: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return settings


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush into the closed pipe
    does not print "Exception ignored ... BrokenPipeError" on the way out."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def check_port(host: str, port: int, option: str = "--port") -> None:
    """Fail with one line naming ``host:port`` when a server could not listen there.

    Binds and closes a socket as the server will (``SO_REUSEADDR``), before anything else starts.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            reason = "it is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ConfigError(
                f"cannot listen on {host}:{port}: {reason}; pick another port with {option} N"
            ) from None


def redact(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="streamq",
        description="Run LLM chat completions behind a job queue; stream tokens through Redis.",
        epilog="Exit codes: 0 done, 1 the job failed (or unhealthy), 2 bad input, configuration"
        " or a failed connection, 3 the job restarted after text was printed, 130 interrupted."
        " `streamq COMMAND --help` describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"streamq {__version__}")
    parser.add_argument("--env-file", help="read settings from this .env file (default: ./.env)")
    parser.add_argument("--log-level", choices=[lvl.lower() for lvl in LOG_LEVELS])
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="json: one object per line")
    subparsers = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    commands = Commands(subparsers)

    worker = commands.add_parser("worker", help="run a worker that streams queued jobs")
    worker.add_argument("--concurrency", type=int, help="jobs at once (STREAMQ_CONCURRENCY)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.add_argument(
        "--processes", type=int, default=1, help="run N worker processes under a supervisor"
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on PORT, all processes' added up (STREAMQ_METRICS_PORT)",
    )
    worker.set_defaults(run=run_worker)

    enqueue = commands.add_parser("enqueue", help="enqueue a chat job and print its id")
    enqueue.add_argument("prompt", help="the user message")
    enqueue.add_argument("--system", help="system prompt")
    enqueue.add_argument("--model", help="model name (default: the worker's OPENAI_MODEL)")
    enqueue.add_argument("--job-id", help="idempotency key; the same id never runs twice")
    enqueue.add_argument("--follow", action="store_true", help="stream the answer to stdout")
    _on_restart_option(enqueue)
    enqueue.set_defaults(run=run_enqueue)

    tail = commands.add_parser("tail", help="follow a job's stream")
    tail.add_argument("job_id")
    tail.add_argument("--from", dest="cursor", metavar="CURSOR", help="resume after this cursor")
    tail.add_argument("--json", action="store_true", help="one JSON object per event")
    _on_restart_option(tail)
    tail.set_defaults(run=run_tail)

    cancel = commands.add_parser("cancel", help="cancel a job (queued or running)")
    cancel.add_argument("job_id")
    cancel.set_defaults(run=run_cancel)

    simulate = commands.add_parser("simulate", help="serve the OpenAI-compatible simulator")
    simulate.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    simulate.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    simulate.add_argument("--tokens-per-second", type=float, help="default: as fast as possible")
    simulate.add_argument("--ttft", type=float, default=0.0, help="time to first token (s)")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.set_defaults(run=run_simulate)

    serve = commands.add_parser("serve", help="serve the HTTP gateway and its chat page")
    serve.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    serve.add_argument("--port", type=int, default=8080, help="default: %(default)s")
    serve.add_argument(
        "--open",
        action="store_true",
        help="without STREAMQ_GATEWAY_TOKENS, serve without authentication",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="also run a worker, and Redis and the simulator where none is configured (implies"
        " --open)",
    )
    serve.set_defaults(run=run_serve)

    stats = commands.add_parser("stats", help="queue depth, workers, throughput, failures")
    stats.add_argument("--json", action="store_true", help="one JSON object")
    stats.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    stats.add_argument("--window", type=int, default=5, metavar="MINUTES", help="default: 5")
    stats.set_defaults(run=run_stats)

    inspect = commands.add_parser("inspect", help="a job's state, attempts, timings and usage")
    inspect.add_argument("job_id")
    inspect.add_argument("--json", action="store_true", help="one JSON object")
    inspect.set_defaults(run=run_inspect)

    health = commands.add_parser("health", help="exit 0 when healthy (for container probes)")
    health.add_argument("--worker", action="store_true", help="also need a live worker here")
    health.add_argument("--json", action="store_true", help="one JSON object")
    health.set_defaults(run=run_health)

    purge = commands.add_parser(
        "purge",
        help="clean up stale bookkeeping (never jobs)",
        details="It never touches queued or running jobs. Removes leases of jobs that ended,"
        " index entries of workers that are gone, this prefix's arq abort entries and arq"
        " keys of jobs that ended; gives job keys that lost their TTL the stream TTL again."
        " To drop queued jobs: `streamq drain`.",
    )
    purge.add_argument("--dry-run", action="store_true", help="count, change nothing")
    purge.add_argument("--json", action="store_true", help="one JSON object")
    purge.set_defaults(run=run_purge)

    drain = commands.add_parser(
        "drain",
        help="cancel every queued job (asks for --yes)",
        details="Jobs that never started leave the queue and end with a `cancelled` event,"
        " which their readers see; running jobs are left alone (`streamq cancel ID` stops one).",
    )
    drain.add_argument("--yes", action="store_true", help="really cancel them")
    drain.add_argument("--dry-run", action="store_true", help="count, change nothing")
    drain.add_argument("--json", action="store_true", help="one JSON object")
    drain.set_defaults(run=run_drain)

    demo = commands.add_parser("demo", help="run worker, enqueue and stream in one go")
    demo.add_argument("prompt", nargs="?", default="Write a haiku about queues.")
    demo.set_defaults(run=run_demo)
    return parser


class Commands:
    """Adds subcommands whose ``--help`` opens with their one-line summary as a sentence."""

    def __init__(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        self._subparsers = subparsers

    def add_parser(self, name: str, *, help: str, details: str = "") -> argparse.ArgumentParser:
        description = f"{help[0].upper()}{help[1:]}." + (f" {details}" if details else "")
        return self._subparsers.add_parser(name, help=help, description=description)


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streamq.worker import openai_client, run_supervised

    if args.concurrency is not None:
        settings = settings.replace(concurrency=args.concurrency)
    if args.metrics_port is not None:
        settings = settings.replace(metrics_port=args.metrics_port)
    openai_client(settings)  # fail now, not at the first job, when no key is configured
    if args.processes < 1:
        raise ConfigError(f"--processes must be 1 or more, not {args.processes}")
    if args.processes > 1:
        return run_fleet(args, settings)
    metrics.start_worker(settings.metrics_port)
    run_supervised(settings, burst=args.burst)
    return 0


def run_fleet(args: argparse.Namespace, settings: Settings) -> int:
    """``--processes N``: the supervisor, which also serves the processes' metrics."""
    from streamq.worker.supervisor import Supervisor

    if not settings.metrics_port:
        return Supervisor(worker_command(args), args.processes).run()
    exporter = metrics.fleet_exporter(settings.metrics_port)
    try:
        return Supervisor(
            worker_command(args),
            args.processes,
            env=exporter.environment(),
            on_exit=exporter.process_ended,
        ).run()
    finally:
        exporter.close()


def worker_command(args: argparse.Namespace) -> list[str]:
    """The command line of one worker process of ``streamq worker --processes N``."""
    command = [sys.executable, "-m", "streamq"]
    for option in ("env_file", "log_level", "log_format"):
        if getattr(args, option):
            command += [f"--{option.replace('_', '-')}", getattr(args, option)]
    command.append("worker")
    if args.concurrency is not None:
        command += ["--concurrency", str(args.concurrency)]
    if args.burst:
        command.append("--burst")
    return command


def _on_restart_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--on-restart",
        choices=ON_RESTART,
        default="exit",
        help="when the job starts again after text was printed: exit with code 3 (default; "
        "stderr says how to follow the new answer) or print only the final answer, at its end",
    )


def run_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    if not args.prompt.strip():
        raise InvalidRequest("the prompt is empty: say what the model should answer")

    async def enqueue() -> int:
        async with StreamQ.from_url(settings.redis_url, settings) as sq:
            job = await sq.enqueue_chat(
                args.prompt, system_prompt=args.system, model=args.model, job_id=args.job_id
            )
            if not args.follow:
                print(job.id)
                return 0
            print(f"job {job.id}", file=sys.stderr)
            return await print_text(job, on_restart=args.on_restart)

    return asyncio.run(enqueue())


def run_tail(args: argparse.Namespace, settings: Settings) -> int:
    async def tail() -> int:
        async with StreamQ.from_url(settings.redis_url, settings) as sq:
            job = sq.job(args.job_id)
            if not args.json:
                return await print_text(job, after=args.cursor, on_restart=args.on_restart)
            async with job.events(after=args.cursor) as events:
                async for event in events:
                    print(json.dumps(event_to_dict(event), ensure_ascii=False), flush=True)
                    if isinstance(event, Error):
                        return EXIT_JOB_FAILED
            return 0

    return asyncio.run(tail())


def run_cancel(args: argparse.Namespace, settings: Settings) -> int:
    async def cancel() -> int:
        async with StreamQ.from_url(settings.redis_url, settings) as sq:
            job = sq.job(args.job_id)
            outcome = await job.cancel()
            print(f"{job.id}: {outcome.replace('_', ' ')}")
            if outcome == "cancelling":  # wait for the worker to confirm
                async with job.events() as events:
                    async for event in events:
                        if is_terminal(event):
                            print(f"{job.id}: ended {event.type}")
            return 0

    return asyncio.run(cancel())


def run_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from streamq.dev.simulator import SimulatorConfig, serve

    config = SimulatorConfig(
        tokens_per_second=args.tokens_per_second, time_to_first_token=args.ttft, seed=args.seed
    )
    check_port(args.host, args.port)

    def ready(url: str) -> None:
        print(f"simulator serving {url}", file=sys.stderr, flush=True)

    asyncio.run(serve(config, args.host, args.port, on_ready=ready))
    return 0


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from streamq.gateway import GatewayConfig
        from streamq.gateway.server import serve
    except ImportError as exc:
        print(
            f"streamq: error: `streamq serve` needs the gateway extra ({exc.name} is missing): "
            "pip install 'streamq[gateway]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    config = GatewayConfig.from_env(env_file=args.env_file, allow_anonymous=args.open or args.demo)
    check_port(args.host, args.port)

    def ready(url: str) -> None:
        auth = "no authentication" if config.open else f"{len(config.tokens)} token(s)"
        print(f"streamq gateway serving {url} ({auth})", file=sys.stderr, flush=True)

    try:
        if args.demo:
            from streamq.dev.demo import serve_demo

            serve_demo(settings, config, args.host, args.port, on_ready=ready)
        else:
            serve(settings, config, args.host, args.port, on_ready=ready)
    except SystemExit as exc:  # uvicorn's "could not start" (the port was taken since the check)
        if exc.code != UVICORN_STARTUP_FAILURE:
            raise
        check_port(args.host, args.port)
        raise ConfigError(f"the gateway could not start on {args.host}:{args.port}") from None
    return 0


def run_stats(args: argparse.Namespace, settings: Settings) -> int:
    async def stats() -> int:
        async with redis_from_url(settings.redis_url) as redis:
            while True:
                snapshot = await queries.fleet_stats(redis, settings, minutes=args.window)
                if args.json:
                    print(admin_text.as_json(snapshot.to_dict()), flush=True)
                else:
                    print(admin_text.stats_text(snapshot), flush=True)
                if not args.watch:
                    return 0
                await asyncio.sleep(args.watch)
                if not args.json:
                    print()

    return asyncio.run(stats())


def run_inspect(args: argparse.Namespace, settings: Settings) -> int:
    async def inspect() -> int:
        async with redis_from_url(settings.redis_url) as redis:
            record = await queries.inspect_job(redis, settings, check_job_id(args.job_id))
        if args.json:
            print(admin_text.as_json(record.to_dict()))
        else:
            print(admin_text.inspect_text(record))
        return 0

    return asyncio.run(inspect())


def run_health(args: argparse.Namespace, settings: Settings) -> int:
    async def health() -> list[str]:
        async with redis_from_url(settings.redis_url) as redis:
            return await queries.health_problems(redis, settings, worker=args.worker)

    problems = asyncio.run(health())
    if args.json:
        print(admin_text.as_json({"healthy": not problems, "problems": problems}))
    else:
        print("\n".join(problems) or "healthy")
    return EXIT_JOB_FAILED if problems else 0


def run_purge(args: argparse.Namespace, settings: Settings) -> int:
    async def purge() -> int:
        async with redis_from_url(settings.redis_url) as redis:
            report = await queries.purge(redis, settings, dry_run=args.dry_run)
        data = report.to_dict()
        if args.json:
            print(admin_text.as_json({"dry_run": args.dry_run, **data}))
        else:
            verb = "would remove" if args.dry_run else "removed"
            print(f"{verb}: " + ", ".join(f"{n.replace('_', ' ')} {v}" for n, v in data.items()))
        return 0

    return asyncio.run(purge())


def run_drain(args: argparse.Namespace, settings: Settings) -> int:
    dry_run = args.dry_run or not args.yes

    async def drain() -> queries.DrainReport:
        async with redis_from_url(settings.redis_url) as redis:
            return await queries.drain(redis, settings, dry_run=dry_run)

    report = asyncio.run(drain())
    total = report.cancelled + report.cancelling
    if args.json:
        print(admin_text.as_json({"dry_run": dry_run, **report.to_dict()}))
    else:
        verb = "would cancel" if dry_run else "cancelled"
        print(f"{verb} {total} queued job(s) of queue {settings.queue_name!r}")
    if not args.yes and not args.dry_run and total:
        print("streamq: nothing was cancelled: add --yes to cancel them", file=sys.stderr)
        return EXIT_USAGE
    return 0


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streamq.dev.demo import run_demo as demo

    return demo(args.prompt, settings)
