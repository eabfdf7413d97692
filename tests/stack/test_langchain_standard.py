"""LangChain's own standard suites (`langchain-tests`) against `RelayChatModel` on the test stack.

The capability flags say what is true of `RelayChatModel(model="demo")`; what the suites skip is a
capability the offline `demo` model cannot have (see README, "LangChain chat model").
"""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from tokenrelay.langchain import RelayChatModel


class TestRelayChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[RelayChatModel]:
        return RelayChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"base_url": "http://127.0.0.1:9", "model": "demo"}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        env = {"TOKENRELAY_URL": "http://relay.example:8000", "TOKENRELAY_API_KEY": "k-test"}
        return env, {"model": "demo"}, {"base_url": "http://relay.example:8000", "api_key": "k-test"}


class TestRelayChatModelIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _stack(self, gateway_url: str) -> None:
        self.gateway_url = gateway_url

    @property
    def chat_model_class(self) -> type[RelayChatModel]:
        return RelayChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"base_url": self.gateway_url, "model": "demo", "params": {"tokens_per_second": 0}}

    @property
    def model_override_value(self) -> str:
        return "openai:echo"  # a model of the test stack, served by the local OpenAI-wire server
