"""Which accounts serve a catalogue model (accounts.services.Routing, issue 17's open
question): a model linked to accounts is served by them only; an unlinked one by the accounts
of its provider that have no model list of their own, never by an account linked to other
models. GET /v1/models and the admin's served marker read the same rule."""

from __future__ import annotations

import pytest

from accounts.models import Account, ModelInfo
from accounts.services import load_routing, out_of_rotation, served_model_ids

pytestmark = pytest.mark.django_db


def test_a_model_list_decides_what_the_routing_serves():
    """accounts.services: an unlinked model is served by the accounts of its provider that
    have no model list, never by one linked to other models (a disabled model counts: the list
    is the account's own), and out_of_rotation names only those."""
    listing = Account.objects.create(provider="openai", label="Listed", base_url="http://x/v1")
    ModelInfo.objects.create(model_id="its-own", provider="openai").accounts.add(listing)
    ModelInfo.objects.create(model_id="off", provider="openai", enabled=False).accounts.add(
        listing)
    ModelInfo.objects.create(model_id="nobodys", provider="openai")
    assert "nobodys" not in served_model_ids() and "its-own" in served_model_ids()
    routing = load_routing()
    unlinked = routing.find_model("nobodys")
    assert unlinked is not None and routing.accounts_for(unlinked) == []
    assert out_of_rotation(unlinked, frozenset()) == []  # nothing to enable: add an account

    ModelInfo.objects.filter(model_id="its-own").delete()  # only a disabled model left
    assert "nobodys" not in served_model_ids()

    spare = Account.objects.create(provider="openai", label="Spare", base_url="http://y/v1",
                                   enabled=False)
    assert out_of_rotation(load_routing().find_model("nobodys"), frozenset()) == [spare]
    Account.objects.filter(pk=spare.pk).update(enabled=True)
    routing = load_routing()
    assert [a.id for a in routing.accounts_for(routing.find_model("nobodys"))] == [spare.pk]
