"""The greeting route and the namespace websockets (`ws://HOST:PORT/llm`, `/system`, ...)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from anvyl.modelserver.lmstudio.protocol import NAMESPACES
from anvyl.modelserver.lmstudio.session import Session

GREETING_PATH = "/lmstudio-greeting"

router = APIRouter()


@router.get(GREETING_PATH)
async def greeting() -> dict[str, bool]:
    """The probe the SDK sends before connecting (`with lms.Client(...)`)."""
    return {"lmstudio": True}


@router.websocket("/{namespace}")
async def namespace_socket(websocket: WebSocket, namespace: str) -> None:
    """One LM Studio session; unknown namespaces are refused at the handshake."""
    if namespace not in NAMESPACES:
        await websocket.close(code=1008)
        return
    await Session(websocket, namespace, websocket.app.state.anvyl).run()
