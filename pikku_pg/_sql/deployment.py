"""SQL of the ``deployment`` component: the registry of running deployments.

Version 1 is the DDL of TypeScript ``@pikku/pg`` 0.12.1 with ``IF NOT EXISTS``.
"""

from __future__ import annotations

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

COMPONENT = Component(
    "deployment",
    (Migration(1, "deployments (TypeScript 0.12.1)", V1_TYPESCRIPT_TABLE),),
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
FIND_FUNCTION = """\
SELECT deployment_id, endpoint
FROM {schema}.pikku_deployments
WHERE functions @> %s::text[]
  AND last_heartbeat > now() - make_interval(secs => %s)
ORDER BY last_heartbeat DESC, deployment_id
"""
