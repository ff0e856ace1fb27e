"""A plain synchronous script: enqueue a prompt, print the answer as it streams in.

    python docs/examples/background_script.py "Write a haiku about queues"

Configured by the environment (or ./.env) like every streamq program: REDIS_URL,
STREAMQ_KEY_PREFIX, ...; a worker (``streamq worker``) runs the job. The same code works in a
Django view, a Flask route, a Celery task or a cron job: no event loop needed.
"""

from __future__ import annotations

import sys

from streamq import JobCancelled, JobFailed, JobRestarted
from streamq.sync import StreamQ


def main(argv: list[str]) -> int:
    prompt = " ".join(argv) or "Write a haiku about queues."
    with StreamQ.from_env() as sq:
        job = sq.enqueue_chat(prompt, system_prompt="Be brief.")
        print(f"job {job.id}", file=sys.stderr)
        cursor = None
        while True:
            try:
                for chunk in job.text(after=cursor):
                    print(chunk, end="", flush=True)
                break
            except JobRestarted as restarted:
                # A worker was lost or the upstream failed mid-answer: the job runs again from
                # the start. Text already printed cannot be taken back, so say so.
                print(f"\n[restarted, attempt {restarted.attempt}]", file=sys.stderr)
                cursor = restarted.cursor
            except (JobFailed, JobCancelled) as exc:
                print(f"\n{exc}", file=sys.stderr)
                return 1
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
