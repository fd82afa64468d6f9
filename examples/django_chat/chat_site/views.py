"""Views that store chat turns with pikku-pg, inside the request's transaction.

The service borrows Django's own psycopg connection (``connection.connection``):
no second pool, and every write joins the transaction that ``ATOMIC_REQUESTS``
opened for the request (each service call is a savepoint inside it). If the view
fails after saving, the whole turn is rolled back with everything else.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from pikku_pg import PgAIStorageService
from pikku_pg.django import django_connection
from pikku_pg.errors import InvalidInputError, ThreadNotFoundError


def _storage() -> PgAIStorageService:
    """The AI storage on this request's connection, inside the request's transaction."""
    return PgAIStorageService(django_connection(), settings.PIKKU_AI_SCHEMA)


def _messages(storage: PgAIStorageService, thread_id: str) -> list[dict[str, Any]]:
    return [m.model_dump(by_alias=True, mode="json") for m in storage.get_messages(thread_id)]


@csrf_exempt
@require_POST
def create_thread(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)
    thread = _storage().create_thread(body["resourceId"], title=body.get("title"))
    return JsonResponse(thread.model_dump(by_alias=True, mode="json"), status=201)


@csrf_exempt
@require_POST
def chat_turn(request: HttpRequest, thread_id: str) -> JsonResponse:
    """Save the user's message and the assistant's reply (one transaction with the request)."""
    body = json.loads(request.body)
    storage = _storage()
    try:
        storage.save_messages(
            thread_id,
            [
                {"role": "user", "content": body["content"]},
                {"role": "assistant", "content": f"echo: {body['content']}"},
            ],
        )
    except ThreadNotFoundError as exc:
        return JsonResponse({"error": str(exc)}, status=404)
    except InvalidInputError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    if body.get("failAfterSave"):
        # Anything failing later in the request rolls the saved turn back too.
        raise RuntimeError("failing on purpose after the save")
    return JsonResponse({"messages": _messages(storage, thread_id)}, status=201)


@require_GET
def show_thread(request: HttpRequest, thread_id: str) -> JsonResponse:
    storage = _storage()
    try:
        thread = storage.get_thread(thread_id)
    except ThreadNotFoundError as exc:
        return JsonResponse({"error": str(exc)}, status=404)
    return JsonResponse(
        {
            "thread": thread.model_dump(by_alias=True, mode="json"),
            "messages": _messages(storage, thread_id),
        }
    )
