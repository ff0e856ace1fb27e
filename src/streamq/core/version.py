"""streamq's version, in a module of its own so that any part can name it without a cycle."""

__version__ = "0.1.0"
