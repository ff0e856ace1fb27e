"""A synchronous client for Django, Flask and scripts, over redis-py's blocking client.

It writes and reads exactly what the async client does (same scripts, keys and wire format), so
a job enqueued here can be read with ``async for`` elsewhere, and the other way round::

    from streamq.sync import StreamQ

    with StreamQ.from_env() as sq:
        job = sq.enqueue_chat("Write a haiku about queues", system_prompt="Be terse.")
        for chunk in job:
            print(chunk, end="", flush=True)
"""

from streamq.sync.client import StreamQ
from streamq.sync.job import ChatJob, EventStream

__all__ = ["ChatJob", "EventStream", "StreamQ"]
