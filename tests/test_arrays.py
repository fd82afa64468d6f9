"""The array literals of ``pikku_pg._arrays`` read back, through PostgreSQL, as what was encoded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pikku_pg._arrays import EMPTY_ARRAY, text_array, timestamp_array

# Any text PostgreSQL can store: every character but NUL (and the lone surrogates UTF-8 lacks).
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@pytest.fixture(scope="module")
def conn(pg_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Europe/Helsinki'")
        yield conn


def read_text_array(conn: psycopg.Connection, literal: str) -> list[str | None]:
    row = conn.execute("SELECT %s::text[]", (literal,)).fetchone()
    assert row is not None
    return list(row[0])


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.none() | texts, max_size=8))
def test_text_arrays_read_back_unchanged(
    conn: psycopg.Connection, values: list[str | None]
) -> None:
    assert read_text_array(conn, text_array(values)) == values


@pytest.mark.parametrize(
    "values",
    [
        [],
        [""],
        ["NULL", "null", None],
        ['say "hi"', "back\\slash", '\\"', "{a,b}", " padded ", "a,b", "new\nline"],
        ["€ ☃ 𝄞", "tab\there"],
    ],
    ids=["empty", "empty-string", "null-words", "specials", "unicode"],
)
def test_text_arrays_keep_the_tricky_elements(
    conn: psycopg.Connection, values: list[str | None]
) -> None:
    assert read_text_array(conn, text_array(values)) == values


def test_an_empty_array_is_the_empty_literal(conn: psycopg.Connection) -> None:
    assert text_array([]) == EMPTY_ARRAY
    assert read_text_array(conn, EMPTY_ARRAY) == []


def test_timestamp_arrays_keep_the_instant(conn: psycopg.Connection) -> None:
    aware = datetime(2026, 11, 27, 1, 2, 3, 456789, tzinfo=timezone(timedelta(hours=-5)))
    utc = datetime(2020, 2, 29, 23, 59, 59, tzinfo=timezone.utc)
    naive = datetime(2026, 6, 1, 12, 0, 0)  # read in the session's time zone, as psycopg does
    row = conn.execute(
        "SELECT %s::timestamptz[], %s::timestamptz",
        (timestamp_array([aware, None, utc, naive]), naive),
    ).fetchone()
    assert row is not None
    assert row[0] == [aware, None, utc, row[1]]
