"""What operators see: worker presence (``presence``), per-minute counters (``counters``) and the
queries behind ``streamq stats``, ``inspect``, ``health`` and ``purge`` (``queries``)."""
