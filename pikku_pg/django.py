"""Using a service on Django's own database connection (Django 4.2+ with psycopg 3).

A service given a connection with no transaction open runs each call in its own
transaction; inside an open one, its writes are savepoints of the caller's
transaction. Django opens a transaction lazily, with the first query of an
``atomic`` block (or of a request under ``ATOMIC_REQUESTS``), so a service
called first in such a block would otherwise commit on its own.
:func:`django_connection` starts Django's transaction first, so the service's
writes commit or roll back with the request.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.pq import TransactionStatus


def django_connection(using: str = "default") -> psycopg.Connection[Any]:
    """The psycopg connection behind Django's connection ``using``, ready for a service.

    Inside an ``atomic`` block, Django's transaction is started if it has not
    been yet, so the service's writes become part of it.
    """
    from django.db import connections

    connection = connections[using]
    connection.ensure_connection()
    conn = connection.connection
    if not isinstance(conn, psycopg.Connection):
        raise TypeError(
            f"Django's {using!r} connection is a {type(conn).__name__}, not a psycopg 3 "
            "connection: use the postgresql backend with psycopg 3 installed"
        )
    if connection.in_atomic_block and conn.info.transaction_status == TransactionStatus.IDLE:
        with connection.cursor() as cursor:  # Django sends its BEGIN with this query
            cursor.execute("SELECT 1")
    return conn
