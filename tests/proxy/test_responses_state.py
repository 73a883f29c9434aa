"""Stored responses (/v1/responses with the real openai SDK, against the fake iFlow):
previous_response_id after streamed and non-streamed answers, retrieve, delete,
input_items.list (the whole conversation, paged as the SDK pages), store: false, another
client key, retention."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.responses import (
    ResponseFunctionToolCallItem,
    ResponseFunctionToolCallOutputItem,
    ResponseInputMessageItem,
    ResponseOutputMessage,
    ResponseReasoningItem,
)

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer, free_port
from tests.sse import named_events

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def sent_messages(upstream) -> list[dict]:
    return upstream.chat_requests[-1].json["messages"]


def test_previous_response_id_after_a_non_streamed_answer(client, upstream):
    upstream.script(sc.text("Nice to meet you, Ada."), sc.text("Your name is Ada."))
    first = client.responses.create(model="glm-5", instructions="Old instructions.",
                                    input="My name is Ada.")
    second = client.responses.create(model="glm-5", previous_response_id=first.id,
                                     instructions="New instructions.", input="What is my name?")
    assert second.output_text == "Your name is Ada."
    assert second.previous_response_id == first.id
    messages = sent_messages(upstream)
    # The earlier request's instructions are not carried over (as in the API).
    assert messages[0] == {"role": "system", "content": "New instructions."}
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user"]
    assert messages[1]["content"] == "My name is Ada."
    assert messages[2]["content"] == "Nice to meet you, Ada."
    assert messages[3]["content"] == "What is my name?"


def follow_up_at_completed(client):
    """Streams an answer to "hello" and, the moment response.completed arrives, asks again
    naming it: it was stored before that event was sent, so the follow-up finds it."""
    with client.responses.stream(model="glm-5", input="hello") as stream:
        for event in stream:
            if event.type == "response.completed":
                return client.responses.create(model="glm-5", input="again",
                                               previous_response_id=event.response.id)
    raise AssertionError("the stream ended without response.completed")


def test_previous_response_id_after_a_streamed_answer_sent_at_once(client, upstream):
    upstream.script(sc.reasoning("The user says hello.", "Hello!"), sc.text("Again."))
    follow_up = follow_up_at_completed(client)
    assert follow_up.output_text == "Again."
    assistant = sent_messages(upstream)[-2]
    assert assistant["role"] == "assistant" and assistant["content"] == "Hello!"
    # The stored reasoning item carries the reasoning back (encrypted_content round trip).
    assert assistant["reasoning_content"] == "The user says hello."


def test_previous_response_id_after_a_streamed_answer_sent_event_by_event(client, upstream):
    # Paced, the events come while the relay waits, and the lean carrier writes such chunks
    # from the reading task (proxy/streaming.py): a stored response's final event must still
    # wait for the store, though [DONE] is 0.3 s behind it.
    upstream.script(sc.slow(sc.text("Hello!", chunks=2), chunk_delay=0.3), sc.text("Again."))
    follow_up = follow_up_at_completed(client)
    assert follow_up.output_text == "Again."
    assert sent_messages(upstream)[-2] == {"role": "assistant", "content": "Hello!"}


def test_a_chain_of_three_and_a_tool_round_trip(client, upstream):
    upstream.script(sc.tool_calls([("get_weather", {"city": "Oslo"})]),
                    sc.text("Cold in Oslo."), sc.text("You asked about Oslo."))
    first = client.responses.create(model="glm-5", input="Weather in Oslo?", tools=TOOLS)
    call = first.output[-1]
    assert call.type == "function_call"
    second = client.responses.create(
        model="glm-5", tools=TOOLS, previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "-5 C"}])
    third = client.responses.create(model="glm-5", previous_response_id=second.id,
                                    input="Which city?")
    assert third.output_text == "You asked about Oslo."
    roles = [(m["role"], m.get("content")) for m in sent_messages(upstream)]
    assert roles == [("user", "Weather in Oslo?"), ("assistant", None), ("tool", "-5 C"),
                     ("assistant", "Cold in Oslo."), ("user", "Which city?")]
    assert sent_messages(upstream)[1]["tool_calls"][0]["id"] == call.call_id


def test_retrieve_input_items_and_delete(client, upstream):
    upstream.script(sc.text("Stored answer."))
    created = client.responses.create(model="glm-5", input=[
        {"role": "developer", "content": "Be kind."},
        {"role": "user", "content": [{"type": "input_text", "text": "one"}]},
        {"type": "message", "role": "user", "content": "two", "id": "msg_client_given"},
    ])
    retrieved = client.responses.retrieve(created.id)
    assert retrieved.id == created.id and retrieved.output_text == "Stored answer."
    assert retrieved.status == "completed"

    items = client.responses.input_items.list(created.id, order="asc")
    assert [item.role for item in items.data] == ["developer", "user", "user"]
    assert items.data[-1].id == "msg_client_given"
    assert all(item.id for item in items.data) and not items.has_more
    newest_first = client.responses.input_items.list(created.id)  # default order: desc
    assert [i.id for i in newest_first.data] == [i.id for i in reversed(items.data)]
    page = client.responses.input_items.list(created.id, order="asc", limit=1)
    assert page.has_more and page.first_id == page.last_id == items.data[0].id
    rest = client.responses.input_items.list(created.id, order="asc", after=page.last_id)
    assert [i.id for i in rest.data] == [i.id for i in items.data[1:]]
    assert [i.id for i in client.responses.input_items.list(created.id, order="asc",
                                                            limit=1)] == [i.id for i in items.data]

    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="glm-5", input="more", previous_response_id=created.id)


def as_api_item(item: dict) -> None:
    """Validates a listed item against the openai SDK's own model for its type (the SDK builds
    list pages without validating them)."""
    if item["type"] == "message":
        model = ResponseOutputMessage if item["role"] == "assistant" else ResponseInputMessageItem
    else:
        model = {"function_call": ResponseFunctionToolCallItem,
                 "function_call_output": ResponseFunctionToolCallOutputItem,
                 "reasoning": ResponseReasoningItem}[item["type"]]
    model.model_validate(item, strict=False)


def test_input_items_list_the_whole_conversation_before_it(client, gateway, upstream):
    upstream.script(sc.tool_calls([("get_weather", {"city": "Oslo"})]),
                    sc.reasoning("They asked about Oslo.", "Cold in Oslo."),
                    sc.text("You asked about Oslo."))
    first = client.responses.create(model="glm-5", tools=TOOLS, input=[
        {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Oslo?"}])
    call = first.output[-1]
    second = client.responses.create(
        model="glm-5", tools=TOOLS, previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "-5 C"}])
    events = list(client.responses.create(model="glm-5", previous_response_id=second.id,
                                          input="Which city?", stream=True))
    third = events[-1].response
    first_own = client.responses.input_items.list(first.id, order="asc").data
    assert [i.type for i in first_own] == ["message", "message"]

    # As the API: every item the response was generated from, the inherited ones first.
    raw = httpx.get(gateway.url + f"/v1/responses/{third.id}/input_items",
                    params={"order": "asc", "limit": 100}, timeout=30).json()
    listed = raw["data"]
    assert [(i["type"], i.get("role")) for i in listed] == [
        ("message", "developer"), ("message", "user"), ("function_call", None),
        ("function_call_output", None), ("reasoning", None), ("message", "assistant"),
        ("message", "user")]
    ids = [i["id"] for i in listed]
    assert ids[:2] == [i.id for i in first_own]
    assert ids[2] == call.id and ids[4:6] == [i.id for i in second.output]
    assert len(set(ids)) == len(ids) and not raw["has_more"]
    assert (raw["first_id"], raw["last_id"]) == (ids[0], ids[-1])
    assert listed[-1]["content"] == [{"type": "input_text", "text": "Which city?"}]
    assert listed[3]["call_id"] == call.call_id and listed[3]["output"] == "-5 C"
    for item in listed:
        as_api_item(item)
    # Only its own request's items for the first of the chain; the second sees the first.
    second_ids = [i.id for i in client.responses.input_items.list(second.id, order="asc")]
    assert second_ids == ids[:4]

    # The SDK's auto-pagination (after=<last id> until has_more is false), newest first.
    assert [i.id for i in client.responses.input_items.list(third.id, limit=2)] == ids[::-1]
    assert [i.id for i in client.responses.input_items.list(third.id, order="asc",
                                                            limit=3)] == ids
    page = client.responses.input_items.list(third.id, order="asc", limit=2,
                                             after=ids[1])
    assert [i.id for i in page.data] == ids[2:4] and page.has_more
    assert (page.first_id, page.last_id) == (ids[2], ids[3])
    before = client.responses.input_items.list(third.id, order="asc", limit=2,
                                               extra_query={"before": ids[4]})
    assert [i.id for i in before.data] == ids[2:4] and before.has_more
    between = client.responses.input_items.list(
        third.id, order="asc", after=ids[0], extra_query={"before": ids[3]})
    assert [i.id for i in between.data] == ids[1:3] and not between.has_more
    newest = client.responses.input_items.list(third.id, limit=1, after=ids[-1])
    assert [i.id for i in newest.data] == [ids[-2]]  # desc: after = older than
    with_include = client.responses.input_items.list(
        third.id, order="asc", include=["reasoning.encrypted_content"])
    assert [i.id for i in with_include.data] == ids
    assert with_include.data[4].encrypted_content  # always there (docs/responses-api.md)
    unknown = client.responses.input_items.list(third.id, after="msg_not_there")
    assert unknown.data == [] and not unknown.has_more

    # A link further back that is gone: the listing starts after it, as a follow-up would.
    client.responses.delete(first.id)
    assert [i.id for i in client.responses.input_items.list(third.id, order="asc")] == ids[3:]


def test_an_item_id_sent_twice_is_a_400(client, gateway, upstream):
    upstream.script(sc.text("First answer."), sc.text("not stored"))
    first = client.responses.create(model="glm-5", input="hi")
    again = first.output[0].model_dump(exclude_none=True)
    # The previous response's own output sent again with previous_response_id (as the API).
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="glm-5", previous_response_id=first.id,
                                input=[again, {"role": "user", "content": "more"}])
    assert raised.value.body["param"] == "input" and again["id"] in raised.value.message
    twice = [{"type": "message", "role": "user", "content": "a", "id": "msg_same"},
             {"type": "message", "role": "user", "content": "b", "id": "msg_same"}]
    response = post_json(gateway, {"model": "glm-5", "input": twice})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    # Not stored, nothing will be listed: accepted (Codex's store: false turns are untouched).
    assert post_json(gateway, {"model": "glm-5", "input": twice, "store": False}).status_code == 200


def post_json(gateway, body: dict) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/responses", json=body, timeout=30)


def test_delete_answer_shape(gateway, upstream):
    upstream.script(sc.text("x"))
    created = httpx.post(gateway.url + "/v1/responses", timeout=30,
                         json={"model": "glm-5", "input": "hi"}).json()
    deleted = httpx.delete(gateway.url + f"/responses/{created['id']}", timeout=30)
    assert deleted.json() == {"id": created["id"], "object": "response", "deleted": True}


def test_store_false_is_never_retrievable(client, gateway, upstream):
    upstream.script(sc.text("not kept"), sc.text("not kept either"))
    plain = client.responses.create(model="glm-5", input="hi", store=False)
    assert plain.store is False
    streamed = httpx.post(gateway.url + "/v1/responses", timeout=30, json={
        "model": "glm-5", "input": "hi", "stream": True, "store": False})
    final = named_events(streamed.content)[-1][1]["response"]
    for response_id in (plain.id, final["id"]):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response_id)
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="glm-5", input="more",
                                    previous_response_id=response_id)


def test_unknown_ids_are_404_in_openai_shape(gateway):
    for method, path in (("GET", "/v1/responses/resp_nope"), ("DELETE", "/v1/responses/resp_nope"),
                         ("GET", "/v1/responses/resp_nope/input_items")):
        response = httpx.request(method, gateway.url + path, timeout=30)
        assert response.status_code == 404, (path, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and "resp_nope" in error["message"]
    response = httpx.post(gateway.url + "/v1/responses", timeout=30, json={
        "model": "glm-5", "input": "hi", "previous_response_id": "resp_nope"})
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "previous_response_id"


def test_bad_input_items_query_is_a_400(client, gateway, upstream):
    upstream.script(sc.text("x"))
    created = client.responses.create(model="glm-5", input="hi")
    for query in ("limit=0", "limit=101", "limit=x", "limit=-1", "limit=%C2%B2",
                  "limit=1" + "0" * 5000, "order=sideways"):  # ² and 5,000 digits: not int()
        response = httpx.get(gateway.url + f"/v1/responses/{created.id}/input_items?{query}",
                             timeout=30)
        assert response.status_code == 400, (query, response.text)


# --- keys: a response is visible only to the key that made it ---------------------------------

KEYS_SETUP = """
from instances.models import ClientKey, Instance
default = Instance.objects.get(name="default")
print(ClientKey.create(default, "alice")[1], ClientKey.create(default, "bob")[1])
"""


@pytest.fixture(scope="module")
def keyed(fake_iflow):
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "RESPONSES_RETENTION_DAYS": "30"}
    with GatewayServer(env, port=free_port()) as server:
        alice, bob = server.shell(KEYS_SETUP).split()[-2:]
        yield server, alice, bob


def test_another_key_cannot_see_it(keyed, upstream):
    server, alice_key, bob_key = keyed
    alice = openai.OpenAI(base_url=server.url + "/v1", api_key=alice_key, max_retries=0)
    bob = openai.OpenAI(base_url=server.url + "/v1", api_key=bob_key, max_retries=0)
    upstream.script(sc.text("for alice"), sc.text("still alice"))
    created = alice.responses.create(model="glm-5", input="secret")
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.input_items.list(created.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(model="glm-5", input="x", previous_response_id=created.id)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong",
                      max_retries=0).responses.retrieve(created.id)
    assert alice.responses.retrieve(created.id).output_text == "for alice"  # still there
    assert alice.responses.create(model="glm-5", input="x",
                                  previous_response_id=created.id).output_text == "still alice"


def test_stored_rows_hold_no_upstream_key_and_expire(keyed, upstream):
    server, alice_key, _bob = keyed
    alice = openai.OpenAI(base_url=server.url + "/v1", api_key=alice_key, max_retries=0)
    upstream.script(sc.text("kept"))
    created = alice.responses.create(model="glm-5", input="hi")
    out = server.shell(
        "import json, datetime\nfrom django.utils import timezone\n"
        "from proxy.models import StoredResponse\n"
        f"row = StoredResponse.objects.get(id={created.id!r})\n"
        "print(json.dumps([row.key.name, row.instance]))\n"
        f"print({FAKE_KEY!r} in json.dumps([row.response, row.input_items]))\n"
        "row.created_at = timezone.now() - datetime.timedelta(days=31)\nrow.save()\n")
    lines = out.strip().splitlines()
    assert json.loads(lines[-2]) == ["alice", "default"]
    assert lines[-1] == "False"
    with pytest.raises(openai.NotFoundError):  # past the retention: never served
        alice.responses.retrieve(created.id)
    deleted = server.shell("from proxy.tasks import delete_expired_responses_task\n"
                           "print(delete_expired_responses_task())")
    assert int(deleted.strip().splitlines()[-1]) >= 1


def test_the_cleanup_is_a_periodic_task_for_celery_beat(keyed):
    server, _alice, _bob = keyed
    out = server.shell(
        "from django_celery_beat.models import PeriodicTask\n"
        "task = PeriodicTask.objects.get(task='proxy.tasks.delete_expired_responses_task')\n"
        "from iflow2api_site.celery import app\napp.loader.import_default_modules()\n"
        "print(task.enabled, task.interval.every, task.interval.period, task.task in app.tasks)")
    assert out.strip().splitlines()[-1] == "True 1 hours True"
