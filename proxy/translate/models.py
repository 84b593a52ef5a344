"""Model list and model object shapes: OpenAI ``{"object": "list", "data": [...]}`` <->
Anthropic ``{"data": [...], "has_more", "first_id", "last_id"}``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .wire import as_object

__all__ = [
    "anthropic_model",
    "anthropic_model_list",
    "openai_model",
    "openai_model_list",
]

_EPOCH = "1970-01-01T00:00:00Z"


def _iso(created: Any) -> str:
    if isinstance(created, int | float) and not isinstance(created, bool):
        return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _EPOCH


def _epoch(created_at: Any) -> int:
    if isinstance(created_at, str):
        try:
            return int(datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0


def anthropic_model(model: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI model object -> an Anthropic one (the id doubles as the display name)."""
    model_id = str(model.get("id", ""))
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id,
        "created_at": _iso(model.get("created")),
    }


def openai_model(model: Mapping[str, Any], owned_by: str = "anthropic") -> dict[str, Any]:
    return {
        "id": str(model.get("id", "")),
        "object": "model",
        "created": _epoch(model.get("created_at")),
        "owned_by": owned_by,
    }


def _data(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    data = body.get("data")
    return [as_object(m) for m in data] if isinstance(data, list) else []


def anthropic_model_list(body: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI lists are not paginated: one Anthropic page with ``has_more: false``."""
    models = [anthropic_model(m) for m in _data(body)]
    return {
        "data": models,
        "has_more": False,
        "first_id": models[0]["id"] if models else None,
        "last_id": models[-1]["id"] if models else None,
    }


def openai_model_list(body: Mapping[str, Any]) -> dict[str, Any]:
    """Only the page the upstream returned (Anthropic's default page holds 20 models)."""
    return {"object": "list", "data": [openai_model(m) for m in _data(body)]}
