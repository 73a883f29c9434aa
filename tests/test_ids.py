"""iflow2api_lib/ids.py: unique hex ids without a system call each."""

from __future__ import annotations

import os
import re
import time

from iflow2api_lib.ids import random_hex
from iflow2api_lib.logs import new_request_id


def test_random_hex_has_the_length_asked_for_and_leading_zeros():
    ids = [random_hex(24) for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert any(i.startswith("0") for i in ids)  # zero-padded, never shorter


def test_a_forked_child_draws_other_ids_than_its_parent():
    # Two processes of a pre-forking server must not hand out the same request ids or lease
    # tokens: the random module reseeds a forked child.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, random_hex(32).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child != random_hex(32)


def test_request_ids_keep_their_shape():
    assert re.fullmatch(r"req_[0-9a-f]{24}", new_request_id())


def test_request_ids_sort_by_the_time_they_were_made():
    # The request log indexes them: ids in the order made keep that index's inserts at its
    # end (random ones each dirtied another page of it).
    first = new_request_id()
    time.sleep(0.002)
    later = [new_request_id() for _ in range(500)]
    assert all(first < one for one in later)
    assert len(set(later)) == len(later)  # unique within one millisecond too
    assert abs(int(first[4:15], 16) - time.time() * 1000) < 60_000
