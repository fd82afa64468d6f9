"""SQL of the ``deployment`` component: the registry of running deployments.

Version 1 is the DDL of TypeScript ``@pikku/pg`` 0.12.1 with ``IF NOT EXISTS``; version 2
tunes its GIN index for ``find_function``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pikku_pg._sql import QuerySet, statement
from pikku_pg.migrations import Component, Migration

V1_TYPESCRIPT_TABLE = """\
CREATE TABLE IF NOT EXISTS {schema}.pikku_deployments (
    deployment_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    functions TEXT[] NOT NULL,
    last_heartbeat TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_pikku_deployments_functions
    ON {schema}.pikku_deployments USING GIN (functions);

CREATE INDEX IF NOT EXISTS idx_pikku_deployments_heartbeat
    ON {schema}.pikku_deployments (last_heartbeat);
"""

# Every heartbeat rewrites its row, and so adds the row's functions to the GIN index. With
# fastupdate (the default) they go to a pending list that every lookup scans in full until
# a vacuum merges it: find_function then costs more than a scan of the table, and the
# planner stops using the index. Written directly, they cost a heartbeat a few
# microseconds more (one every 10 s per deployment) and keep lookups at index speed.
V2_GIN_WITHOUT_PENDING_LIST = """\
ALTER INDEX {schema}.idx_pikku_deployments_functions SET (fastupdate = off);
SELECT gin_clean_pending_list('{schema}.idx_pikku_deployments_functions'::regclass);
"""

COMPONENT = Component(
    "deployment",
    (
        Migration(1, "deployments (TypeScript 0.12.1)", V1_TYPESCRIPT_TABLE),
        Migration(2, "GIN index on functions without a pending list", V2_GIN_WITHOUT_PENDING_LIST),
    ),
    default_schema="pikku",
)

# Used by start(), and by a heartbeat that found its row gone (removed by a cleanup job,
# a restored backup...): the row is put back.
UPSERT = """\
INSERT INTO {schema}.pikku_deployments
    (deployment_id, endpoint, functions, last_heartbeat)
VALUES (%s, %s, %s::text[], now())
ON CONFLICT (deployment_id) DO UPDATE SET
    endpoint = EXCLUDED.endpoint,
    functions = EXCLUDED.functions,
    last_heartbeat = now()
"""

HEARTBEAT = """\
UPDATE {schema}.pikku_deployments
SET last_heartbeat = now()
WHERE deployment_id = %s
"""

DELETE = """\
DELETE FROM {schema}.pikku_deployments
WHERE deployment_id = %s
"""

# `functions @> ARRAY[name]` can use the GIN index; `name = ANY(functions)` cannot. The
# one-element array is the parameter, so a generic plan does not build it for each row.
# The heartbeat test is written so that it cannot use the heartbeat index: statistics
# always lag behind heartbeats, so the planner would believe that no row is recent, pick
# that index and then test every live row. The sort is outside the OFFSET 0 fence so
# that the planner does not walk that index backwards either, to save sorting the few
# rows that match.
FIND_FUNCTION = """\
SELECT deployment_id, endpoint
FROM (
    SELECT deployment_id, endpoint, last_heartbeat
    FROM {schema}.pikku_deployments
    WHERE functions @> %s::text[]
      AND last_heartbeat + make_interval(secs => %s) > now()
    OFFSET 0
) live
ORDER BY last_heartbeat DESC, deployment_id
"""

# Every deployment, live or stale (find_function only returns live ones): an operator
# wants to see the ones that stopped beating too. The function filter uses the GIN index.
LIST_DEPLOYMENTS = """\
SELECT deployment_id, endpoint, functions, last_heartbeat, created_at,
       last_heartbeat > now() - make_interval(secs => %(ttl)s) AS live,
       now() - last_heartbeat AS heartbeat_age
FROM {schema}.pikku_deployments
WHERE (%(function)s::text IS NULL OR functions @> ARRAY[%(function)s::text])
  AND (NOT %(live_only)s OR last_heartbeat > now() - make_interval(secs => %(ttl)s))
ORDER BY live DESC, last_heartbeat DESC, deployment_id
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class DeploymentQueries(QuerySet):
    """The statements of the ``deployment`` component."""

    upsert: bytes = statement(UPSERT)
    heartbeat: bytes = statement(HEARTBEAT)
    delete: bytes = statement(DELETE)
    find_function: bytes = statement(FIND_FUNCTION)
    list_deployments: bytes = statement(LIST_DEPLOYMENTS)
