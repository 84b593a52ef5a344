"""Translation between API families, used only when a client's API differs from the chosen
upstream's (same-family traffic never comes here). Pure and incremental: no IO except the
Responses conversation store, which is a protocol the caller provides.

    client = client_api(route.provider, request.method, tail)
    plan = translation_for(client, upstream.api, store=store)
    match plan:
        case Passthrough(): forward bytes untouched
        case Unsupported(): answer plan.response()
        case Translation():
            req = await plan.request(body_json)       # TranslatedRequest | LocalAnswer
            ... send req.encoded() to req.path with req.headers ...
            plan.response(status, headers, body) or plan.stream(headers).feed(...)/finish()
            await plan.settle()
"""

from .errors import ErrorKind, UpstreamError, parse_error, translate_error
from .families import ApiFamily, ClientApi, Endpoint, NotTranslatable, client_api, upstream_path
from .plan import Passthrough, Translation, Unsupported, translation_for
from .records import (
    LocalAnswer,
    StreamTranslator,
    TranslatedRequest,
    TranslatedResponse,
    TranslationOptions,
)
from .responses_chat.store import MemoryResponseStore, ResponseStore, StoredConversation

__all__ = [
    "ApiFamily",
    "ClientApi",
    "Endpoint",
    "ErrorKind",
    "LocalAnswer",
    "MemoryResponseStore",
    "NotTranslatable",
    "Passthrough",
    "ResponseStore",
    "StoredConversation",
    "StreamTranslator",
    "TranslatedRequest",
    "TranslatedResponse",
    "Translation",
    "TranslationOptions",
    "Unsupported",
    "UpstreamError",
    "client_api",
    "parse_error",
    "translate_error",
    "translation_for",
    "upstream_path",
]
