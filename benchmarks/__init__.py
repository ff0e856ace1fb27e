"""streamq's benchmark harness: ``make bench`` or ``python -m benchmarks`` (see README.md)."""
