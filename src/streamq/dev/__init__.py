"""Development parts: ``streamq demo`` and ``serve --demo`` (``demo``), a throwaway
``redis-server`` (``local_redis``) and the OpenAI-compatible simulator (``simulator``)."""
