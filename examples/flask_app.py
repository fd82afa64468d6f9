"""Flask (sync) with one ``ConnectionPool`` shared by the services.

Run it::

    pip install flask
    pikku-pg migrate --component ai          # once, or let create_app() do it
    DATABASE_URL=postgresql://localhost/app flask --app examples/flask_app.py run

    curl -X POST localhost:5000/threads -H 'content-type: application/json' \\
         -d '{"resourceId": "user:ada", "title": "Hello"}'
    curl -X POST localhost:5000/threads/<id>/messages -H 'content-type: application/json' \\
         -d '{"content": "Hi!"}'
    curl localhost:5000/threads/<id>

The services borrow the pool: each call checks a connection out and back in,
so the app's request threads share ``max_size`` connections. The pool's
connections are in autocommit, so a one-statement call is one round trip.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

from flask import Flask, abort, jsonify, request
from psycopg_pool import ConnectionPool

from pikku_pg import PgAgentRunService, PgAIStorageService
from pikku_pg.errors import InvalidInputError, ThreadNotFoundError


def create_app(conninfo: str | None = None, schema: str | None = None) -> Flask:
    """The app; ``conninfo`` defaults to ``$DATABASE_URL``, ``schema`` to ``pikku_ai``."""
    pool = ConnectionPool(
        conninfo or os.environ["DATABASE_URL"],
        min_size=1,
        max_size=10,
        kwargs={"autocommit": True},
        open=True,
    )
    atexit.register(pool.close)
    storage = PgAIStorageService(pool, schema)
    console = PgAgentRunService(pool, schema)
    storage.init()  # no DDL when the tables are up to date

    app = Flask(__name__)
    app.extensions["pikku_pool"] = pool  # so tests (and teardown code) can close it

    @app.errorhandler(ThreadNotFoundError)
    def not_found(exc: ThreadNotFoundError) -> Any:
        return jsonify(error=str(exc)), 404

    @app.errorhandler(InvalidInputError)
    def bad_input(exc: InvalidInputError) -> Any:
        return jsonify(error=str(exc)), 400

    @app.post("/threads")
    def create_thread() -> Any:
        body = request.get_json(force=True)
        thread = storage.create_thread(body["resourceId"], title=body.get("title"))
        return jsonify(thread.model_dump(by_alias=True, mode="json")), 201

    @app.get("/threads")
    def list_threads() -> Any:
        threads = console.list_threads(resource_id=request.args.get("resourceId"), limit=20)
        return jsonify([t.model_dump(by_alias=True, mode="json") for t in threads])

    @app.post("/threads/<thread_id>/messages")
    def post_message(thread_id: str) -> Any:
        """Store the user's message and a (canned) assistant reply in one transaction."""
        text = request.get_json(force=True).get("content")
        if not isinstance(text, str) or not text:
            abort(400, "content must be a non-empty string")
        storage.save_messages(
            thread_id,
            [
                {"role": "user", "content": text},
                {"role": "assistant", "content": f"You said {len(text)} characters."},
            ],
        )
        return jsonify(_messages(thread_id)), 201

    @app.get("/threads/<thread_id>")
    def get_thread(thread_id: str) -> Any:
        thread = storage.get_thread(thread_id)
        return jsonify(
            thread=thread.model_dump(by_alias=True, mode="json"), messages=_messages(thread_id)
        )

    def _messages(thread_id: str) -> list[dict[str, Any]]:
        return [m.model_dump(by_alias=True, mode="json") for m in storage.get_messages(thread_id)]

    return app


if __name__ == "__main__":
    create_app().run(debug=True)
