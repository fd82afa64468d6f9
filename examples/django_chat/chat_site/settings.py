"""Settings of the chat example: the database comes from ``DATABASE_URL``.

``ATOMIC_REQUESTS`` wraps each view in a transaction; the pikku-pg services are
given Django's own psycopg connection, so what they write commits or rolls back
with the rest of the request.
"""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

_params = conninfo_to_dict(os.environ.get("DATABASE_URL", "postgresql://localhost/postgres"))

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",  # Django >= 4.2 uses psycopg 3
        "NAME": _params.pop("dbname", "postgres"),
        "USER": _params.pop("user", ""),
        "PASSWORD": _params.pop("password", ""),
        "HOST": _params.pop("host", ""),
        "PORT": _params.pop("port", ""),
        "OPTIONS": _params,  # anything else of the conninfo (sslmode...)
        "ATOMIC_REQUESTS": True,
    }
}

#: Where the AI tables live (create them once: ``pikku-pg migrate --component ai``).
PIKKU_AI_SCHEMA = os.environ.get("PIKKU_AI_SCHEMA", "pikku_ai")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "chat_site.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
USE_TZ = True
TIME_ZONE = "UTC"
