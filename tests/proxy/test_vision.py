"""Images on both APIs: routing to a vision model, URL inlining for iFlow, SSRF guard, bad
images as 400s."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.images import data_url, image_server, png
from tests.servers import GatewayServer

PNG = png()


def openai_image_body(url: str, model: str = "glm-5") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]}


def anthropic_image_body(source: dict, model: str = "claude-sonnet-4-6") -> dict:
    return {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "image", "source": source}, {"type": "text", "text": "Describe it"}]}]}


def sent_image_urls(upstream) -> list[str]:
    return [part["image_url"]["url"] for message in upstream.chat_requests[-1].json["messages"]
            if isinstance(message.get("content"), list)
            for part in message["content"] if part.get("type") == "image_url"]


def test_openai_image_to_a_text_model_goes_to_the_vision_model(gateway, upstream):
    upstream.script(sc.text("A red square."))
    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                          json=openai_image_body(data_url(PNG)))
    assert response.status_code == 200, response.text
    assert upstream.chat_requests[-1].json["model"] == "qwen-vl-max"
    assert sent_image_urls(upstream) == [data_url(PNG)]


def test_anthropic_base64_image_passes_as_a_data_url(gateway, upstream):
    upstream.script(sc.text("A red square."))
    source = {"type": "base64", "media_type": "image/png",
              "data": base64.b64encode(PNG).decode()}
    response = httpx.post(gateway.url + "/v1/messages", timeout=30,
                          json=anthropic_image_body(source))
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "A red square."
    assert upstream.chat_requests[-1].json["model"] == "qwen-vl-max"
    assert sent_image_urls(upstream) == [data_url(PNG)]


def test_image_urls_to_loopback_are_refused_by_default(gateway, upstream):
    with image_server({"/a.png": ("image/png", PNG)}) as base:
        response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                              json=openai_image_body(base + "/a.png"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_image_url"
    assert "private or local" in response.json()["error"]["message"]
    assert upstream.chat_requests == []


@pytest.mark.parametrize(("url", "fragment"), [
    ("data:image/png;base64,!!!!", "not valid base64"),
    ("data:image/bmp;base64," + base64.b64encode(b"BM" + b"\0" * 40).decode(), "unsupported"),
    (data_url(b"not an image at all", "image/png"), "unsupported"),
    ("ftp://example.com/a.png", "http(s)"),
])
def test_bad_images_are_400(gateway, upstream, url, fragment):
    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                          json=openai_image_body(url, model="qwen-vl-max"))
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]
    assert upstream.chat_requests == []


def test_a_mislabelled_image_is_sent_with_its_real_type(gateway, upstream):
    gif = b"GIF89a" + b"\x01\x00\x01\x00\x00\x00\x00;"
    upstream.script(sc.text("ok"))
    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                          json=openai_image_body(data_url(gif, "image/png"), model="qwen-vl-max"))
    assert response.status_code == 200
    assert sent_image_urls(upstream) == [data_url(gif, "image/gif")]


def test_bad_anthropic_image_is_an_anthropic_400(gateway, upstream):
    source = {"type": "base64", "media_type": "image/png", "data": "%%%"}
    response = httpx.post(gateway.url + "/v1/messages", timeout=30,
                          json=anthropic_image_body(source))
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.fixture(scope="module")
def lenient_gateway(fake_iflow):
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "IMAGE_ALLOW_PRIVATE_URLS": "true", "IMAGE_MAX_BYTES": "20000",
           "IMAGE_MAX_URLS": "4", "POOL_QUEUE_TIMEOUT": "3"}
    with GatewayServer(env) as server:
        yield server


def test_url_images_are_fetched_and_inlined_for_iflow(lenient_gateway, upstream):
    files = {"/a.png": ("image/png", PNG), "/moved": ("redirect", b"/a.png"),
             "/big.png": ("image/png", png(padding=30000)), "/page": ("text/html", b"<html>")}
    with image_server(files) as base:
        for path in ("/a.png", "/moved"):
            upstream.script(sc.text("seen"))
            response = httpx.post(lenient_gateway.url + "/v1/chat/completions", timeout=30,
                                  json=openai_image_body(base + path, model="qwen-vl-max"))
            assert response.status_code == 200, response.text
            assert sent_image_urls(upstream) == [data_url(PNG)]

        upstream.script(sc.text("seen"))
        response = httpx.post(lenient_gateway.url + "/v1/messages", timeout=30,
                              json=anthropic_image_body({"type": "url", "url": base + "/a.png"}))
        assert response.status_code == 200, response.text
        assert sent_image_urls(upstream) == [data_url(PNG)]

        too_big = httpx.post(lenient_gateway.url + "/v1/chat/completions", timeout=30,
                             json=openai_image_body(base + "/big.png", model="qwen-vl-max"))
        assert too_big.status_code == 400 and "larger than" in too_big.text
        not_image = httpx.post(lenient_gateway.url + "/v1/chat/completions", timeout=30,
                               json=openai_image_body(base + "/page", model="qwen-vl-max"))
        assert not_image.status_code == 400 and "not an image" in not_image.text
        missing = httpx.post(lenient_gateway.url + "/v1/chat/completions", timeout=30,
                             json=openai_image_body(base + "/nope.png", model="qwen-vl-max"))
        assert missing.status_code == 400 and "HTTP 404" in missing.text


def wait_for(condition, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def url_images_body(urls: list[str]) -> dict:
    return {"model": "qwen-vl-max", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}} for url in urls]}]}


def test_images_are_fetched_in_parallel_before_an_account_slot_is_taken(
        lenient_gateway, upstream):
    """The iFlow account serves one request at a time. While a request's four image downloads
    hang, a text request is still served, and all four downloads are in flight at once."""
    images = {f"/{i}.png": ("image/png", png(padding=i + 1)) for i in range(4)}
    seen: list[str] = []
    gate = threading.Event()
    answers: list[httpx.Response] = []
    with image_server(images, seen=seen, gate=gate) as base:
        body = url_images_body([base + path for path in images])
        sender = threading.Thread(target=lambda: answers.append(httpx.post(
            lenient_gateway.url + "/v1/chat/completions", json=body, timeout=30)))
        sender.start()
        try:
            assert wait_for(lambda: seen), "the gateway never fetched an image"
            text = httpx.post(lenient_gateway.url + "/v1/chat/completions", timeout=15,
                              json={"model": "glm-5",
                                    "messages": [{"role": "user", "content": "hi"}]})
            assert text.status_code == 200, text.text  # not queued behind the downloads
            assert wait_for(lambda: len(seen) == 4, 5), f"not fetched in parallel: {seen}"
        finally:
            gate.set()
            sender.join(30)
    assert answers and answers[0].status_code == 200, answers and answers[0].text
    assert sorted(sent_image_urls(upstream)) == sorted(data_url(data) for _, data in
                                                       images.values())


def test_too_many_image_urls_is_a_400_in_each_api_shape(lenient_gateway, upstream):
    seen: list[str] = []
    with image_server({"/a.png": ("image/png", PNG)}, seen=seen) as base:
        urls = [f"{base}/a.png?{i}" for i in range(5)]
        openai = httpx.post(lenient_gateway.url + "/v1/chat/completions", timeout=30,
                            json=url_images_body(urls))
        anthropic = httpx.post(lenient_gateway.url + "/v1/messages", timeout=30, json={
            "model": "qwen-vl-max", "max_tokens": 50, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": url}} for url in urls]}]})
    assert openai.status_code == 400
    assert openai.json()["error"]["code"] == "too_many_images"
    assert "at most 4" in openai.json()["error"]["message"]
    assert anthropic.status_code == 400
    assert anthropic.json()["type"] == "error"
    assert "at most 4" in anthropic.json()["error"]["message"]
    assert seen == [] and upstream.chat_requests == []


def test_reject_policy(fake_iflow, upstream):
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "VISION_FALLBACK": "reject"}
    with GatewayServer(env) as server:
        response = httpx.post(server.url + "/v1/chat/completions", timeout=30,
                              json=openai_image_body(data_url(PNG)))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "model_not_vision"
        ok = httpx.post(server.url + "/v1/chat/completions", timeout=30,
                        json=openai_image_body(data_url(PNG), model="qwen-vl-max"))
        assert ok.status_code == 200
