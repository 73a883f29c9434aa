from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.llama import LlamaBuild, LlamaServer, llama_build
from tests.servers import GatewayServer

# The gateway's model ids for the one llama-server (which, serving one model, ignores the name):
# one served by an OpenAI-compatible account (/v1/chat/completions), one by an Anthropic
# account (/v1/messages, count_tokens).
OPENAI_MODEL = "gemma-openai"
ANTHROPIC_MODEL = "gemma-anthropic"
# The OpenAI account's model for the token-calibration test alone: a model's fit is learnt from
# its own recent requests, so other tests' requests (tools, system prompts) must not feed it.
CALIBRATION_MODEL = "gemma-calibration"


@pytest.fixture(scope="session")
def llama_paths() -> LlamaBuild:
    return llama_build()


@pytest.fixture(scope="session")
def llama(llama_paths: LlamaBuild) -> Iterator[LlamaServer]:
    with LlamaServer(llama_paths) as server:
        yield server


@pytest.fixture(scope="session")
def llama_gateway(llama: LlamaServer) -> Iterator[GatewayServer]:
    """A gateway whose two accounts are the session's llama-server, added as a user would."""
    # A small model on two shared cores: a prompt near the context takes seconds.
    gateway = GatewayServer({"UPSTREAM_READ_TIMEOUT": "120"})
    gateway.cli("addaccount", "--label", "llama.cpp (OpenAI)", "--base-url", llama.url + "/v1",
                "--models", f"{OPENAI_MODEL},{CALIBRATION_MODEL}")
    gateway.cli("addaccount", "--provider", "anthropic", "--label", "llama.cpp (Anthropic)",
                "--base-url", llama.url, "--models", ANTHROPIC_MODEL)
    with gateway:
        yield gateway
