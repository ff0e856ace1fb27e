"""Fault injection with real processes on loopback: Redis, a TCP fault proxy, worker processes."""
