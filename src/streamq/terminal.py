"""What the CLI and the demo print while following a job: its text on stdout, notices on stderr."""

from __future__ import annotations

import sys

from streamq.core.events import Cancelled, Delta, Error, Reset
from streamq.job import ChatJob

EXIT_JOB_FAILED = 1
EXIT_RESTARTED = 3  # the job started again after text was printed (--on-restart exit)


async def print_text(job: ChatJob, after: str | None = None, on_restart: str = "exit") -> int:
    """Write the job's content deltas to stdout; notices go to stderr.

    stdout never holds text of two attempts. A restart before any text is followed silently;
    after text, ``on_restart`` decides: ``exit`` stops with :data:`EXIT_RESTARTED` and says
    which cursor the new attempt follows; ``final`` holds all text back and prints the last
    attempt's at the end; ``follow`` (the demo, for a person at a terminal) prints a notice and
    the new attempt's text on a fresh line.
    """
    held: list[str] = []
    printed = False
    async with job.events(after=after) as events:
        async for event in events:
            if isinstance(event, Delta) and event.choice == 0:
                if on_restart == "final":
                    held.append(event.text)
                    continue
                sys.stdout.write(event.text)
                sys.stdout.flush()
                printed = True
            elif isinstance(event, Reset):
                held.clear()
                if not printed:
                    continue
                notice = f"\nstreamq: job {job.id} restarted (attempt {event.attempt})"
                if on_restart == "exit":
                    follow = f"streamq tail {job.id} --from {event.cursor}"
                    print(f"{notice} after text was printed; its new answer: {follow}",
                          file=sys.stderr)  # fmt: skip
                    return EXIT_RESTARTED
                print(notice, file=sys.stderr)
                printed = False
            elif isinstance(event, Error | Cancelled):
                detail = f"[{event.code}] {event.message}" if isinstance(event, Error) else ""
                print(f"\nstreamq: job {job.id} {event.type} {detail}".rstrip(), file=sys.stderr)
                return EXIT_JOB_FAILED
    sys.stdout.write("".join(held) + "\n")
    return 0
