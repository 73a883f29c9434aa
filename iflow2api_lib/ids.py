"""Identifiers that must be unique but need not be secret: request ids, completion and message
ids, slot lease tokens.

`uuid.uuid4()` and `secrets` read the kernel's random source with one system call each; three
or four per request were ~3 % of a request's CPU at c=50. `random`'s generator is seeded from
that source once per process (and again in a forked child: the random module does that
itself). Its output can be predicted from enough earlier output, so nothing a client could use
as a secret or a capability (a stored response's id, an OAuth state) is made here.
"""

from __future__ import annotations

import random


def random_hex(chars: int) -> str:
    """`chars` random hex digits."""
    return f"{random.getrandbits(chars * 4):0{chars}x}"
