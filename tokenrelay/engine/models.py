"""The server-side model registry: which names a client may use, and how each becomes a chat model."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel

from ..core.registry import OPENAI_PREFIX, check_model
from ..core.settings import Settings
from ..errors import ModelNotConfigured, UnknownModel
from .demo import DemoChatModel


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    tokens_per_second: float | None = None  # demo only: pace of the offline model
    start_delay_s: float = 0.0  # demo only: a wait before its first token

    @classmethod
    def from_dict(cls, raw: dict, default_max_tokens: int) -> "GenerationParams":
        stop = raw.get("stop") or ()
        return cls(
            max_tokens=int(raw.get("max_tokens") or default_max_tokens),
            temperature=raw.get("temperature"),
            stop=tuple([stop] if isinstance(stop, str) else stop),
            tokens_per_second=raw.get("tokens_per_second"),
            start_delay_s=float(raw.get("start_delay_s") or 0.0),
        )


def build_chat_model(name: str, params: GenerationParams, settings: Settings) -> BaseChatModel:
    """A chat model for an allowed name; provider credentials come from settings, never from clients."""
    check_model(name, settings)
    if name == "demo":
        pace = 30.0 if params.tokens_per_second is None else params.tokens_per_second
        return DemoChatModel(max_tokens=params.max_tokens, tokens_per_second=pace, stop=list(params.stop) or None,
                             start_delay_s=params.start_delay_s)
    if name.startswith(OPENAI_PREFIX):
        from langchain_openai import ChatOpenAI

        if not settings.openai_api_key and not settings.openai_base_url:
            raise ModelNotConfigured("OPENAI_API_KEY is not set on the workers")

        return ChatOpenAI(
            model=name[len(OPENAI_PREFIX) :],
            api_key=settings.openai_api_key or "not-configured",
            base_url=settings.openai_base_url,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            stop=list(params.stop) or None,
            streaming=True,
            stream_usage=True,
            max_retries=0,
        )
    raise UnknownModel(name, settings.models)


class ChatModels:
    """Built chat models, one per (name, generation parameters), the least recently used dropped first.

    A model is immutable once built and safe to stream from many jobs at once; building one per job
    cost each job's first token LangChain's serialization of the new instance (about 0.1 ms of the
    worker's CPU, done once per instance on its first `astream`)."""

    def __init__(self, settings: Settings, capacity: int = 64) -> None:
        self.settings = settings
        self.capacity = capacity
        self._built: OrderedDict[tuple[str, GenerationParams], BaseChatModel] = OrderedDict()

    def get(self, name: str, params: GenerationParams) -> BaseChatModel:
        key = (name, params)
        model = self._built.get(key)
        if model is None:
            model = self._built[key] = build_chat_model(name, params, self.settings)
            if len(self._built) > self.capacity:
                self._built.popitem(last=False)
        else:
            self._built.move_to_end(key)
        return model
