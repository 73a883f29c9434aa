"""The inline cleanup of expired stored responses (a server without Celery beat): saving an
answer deletes rows past RESPONSES_RETENTION_DAYS, at most once per interval, and the throttle is
the Runtime's (each process, each test Runtime its own)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from proxy import responses_state
from proxy.models import StoredResponse
from proxy.responses_state import ExpiryCleanup, Owner
from proxy.runtime import Runtime

pytestmark = pytest.mark.django_db

OWNER = Owner(instance="default", key_id=None)


def _save(response_id: str, cleanup: ExpiryCleanup | None) -> None:
    responses_state.save({"id": response_id, "model": "m", "created_at": time.time()},
                         owner=OWNER, input_items=[], instructions=None, cleanup=cleanup)


def _expire(response_id: str) -> None:
    StoredResponse.objects.filter(id=response_id).update(
        created_at=timezone.now() - responses_state.retention() - timedelta(minutes=1))


def _ids() -> set[str]:
    return set(StoredResponse.objects.values_list("id", flat=True))


def test_a_save_deletes_expired_rows_once_per_interval() -> None:
    cleanup = ExpiryCleanup(every_seconds=3600)
    _save("resp_old", None)
    _expire("resp_old")
    _save("resp_1", cleanup)  # first save: due
    assert _ids() == {"resp_1"}
    assert cleanup.last_run is not None

    _save("resp_old2", None)
    _expire("resp_old2")
    _save("resp_2", cleanup)  # within the interval: the expired row stays for now
    assert _ids() == {"resp_1", "resp_old2", "resp_2"}

    cleanup.last_run -= 3601  # the interval has passed
    _save("resp_3", cleanup)
    assert _ids() == {"resp_1", "resp_2", "resp_3"}


def test_a_failing_cleanup_keeps_the_answer(monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> int:
        raise RuntimeError("database went away")

    monkeypatch.setattr(responses_state, "delete_expired", broken)
    _save("resp_kept", ExpiryCleanup())
    assert _ids() == {"resp_kept"}
    assert "cleanup of expired stored responses failed" in caplog.text


def test_each_runtime_has_its_own_throttle() -> None:
    first, second = Runtime.build(redis_url=""), Runtime.build(redis_url="")
    assert first.responses_cleanup is not second.responses_cleanup
    _save("resp_a", first.responses_cleanup)
    assert first.responses_cleanup.last_run is not None
    assert second.responses_cleanup.last_run is None
