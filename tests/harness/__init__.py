"""The suites' one test harness (tests, tests/faults, tests/gateway, tests/compat, benchmarks).

- :mod:`.processes`: real subprocesses: worker pools that say when each worker serves, CLI
  runs, one launcher and one stopper for every Python process the suites start;
- :mod:`.redis_servers`: throwaway redis-servers, all :class:`streamq.dev.local_redis.LocalRedis`;
- :mod:`.loop_thread`: an event loop in a thread (a worker beside blocking code, a server);
- :mod:`.gateway`: the HTTP gateway under uvicorn on such a thread;
- :mod:`.upstreams`: a scripted OpenAI-compatible server, for answers no real server gives;
- :mod:`.waiting`: ``poll_until``: wait for a condition under a generous bound, never a sleep.
"""
