"""What the model server's routes share: settings, the engine and the model's description."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from fastapi import Request

from anvyl.modelserver.config import ServerConfig
from anvyl.modelserver.engine import Engine
from anvyl.modelserver.loader import ModelInfo
from anvyl.modelserver.protocol import now
from anvyl.modelserver.thinking import OPEN
from anvyl.modelserver.tools import detect_tool_format


@dataclass
class ServerState:
    """What the routes share: settings, the engine and the model's description."""

    config: ServerConfig
    engine: Engine
    info: ModelInfo | None
    created: int = field(default_factory=now)
    draining: bool = False
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)
    _tool_format: str | None = None

    def model_info(self) -> ModelInfo | None:
        """The loaded model's info, else what config.json said."""
        loaded = self.engine.loaded
        return loaded.info if loaded is not None else self.info

    def tool_format(self) -> str | None:
        """The tool-call format of the model's chat template (`generic` without tools)."""
        loaded = self.engine.loaded
        if self._tool_format is None and loaded is not None:
            template = getattr(loaded.tokenizer, "chat_template", None)
            self._tool_format = detect_tool_format(template)
        return self._tool_format

    def reasons(self) -> bool:
        """Whether the model's chat template reasons in `<think>` tags (Qwen3, DeepSeek-R1)."""
        loaded = self.engine.loaded
        template = getattr(loaded.tokenizer, "chat_template", None) if loaded else None
        return isinstance(template, str) and OPEN in template

    def context_length(self) -> int:
        """The served context length (model's, capped by --ctx)."""
        info = self.model_info()
        assert info is not None
        return info.context_length


def state_of(request: Request) -> ServerState:
    """The `ServerState` of the app handling `request`."""
    return request.app.state.anvyl
