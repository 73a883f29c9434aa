"""iflow2api's library: small helpers every package may use (the apps, upstream, desktop, the
site). It imports no Django app and reads no Django settings at import time."""

__version__ = "0.1.0"
