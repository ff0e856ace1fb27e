"""The shared core: what every side of streamq agrees on, and nothing that runs a job.

Settings (``settings``), every Redis key (``keys``), the wire format (``events``), chat requests
(``request``), every Lua script (``scripts``), the arq envelope (``queue``), Redis clients and
their URLs (``connections``, ``redis_urls``, ``redis_errors``, ``clock``), the sans-IO protocol
both clients share (``protocol``), the error tree (``exceptions``), logging and metrics hooks.
It imports no other room of the package.
"""
