"""``deployments [--function NAME]``: the registry of running deployments."""

from __future__ import annotations

import argparse
from typing import Any

from psycopg.rows import dict_row

from pikku_pg._cli._common import EXIT_OK, connect, expect_tables, positive_float, positive_int
from pikku_pg._cli.output import Column, Output, fmt_duration, fmt_time
from pikku_pg._schema import validate_schema_name
from pikku_pg._sql import render

DEPLOYMENT_SCHEMA = "pikku"
#: The heartbeat TTL of ``PgDeploymentService`` by default: older beats mean "stale".
DEFAULT_TTL = 30.0

# Every deployment, live or stale (find_function() only returns live ones): an operator
# wants to see the ones that stopped beating too. The filter uses the GIN index.
LIST_DEPLOYMENTS = """\
SELECT deployment_id, endpoint, functions, last_heartbeat, created_at,
       last_heartbeat > now() - make_interval(secs => %(ttl)s) AS live,
       now() - last_heartbeat AS age
FROM {schema}.pikku_deployments
WHERE (%(function)s::text IS NULL OR functions @> ARRAY[%(function)s::text])
  AND (NOT %(live_only)s OR last_heartbeat > now() - make_interval(secs => %(ttl)s))
ORDER BY live DESC, last_heartbeat DESC, deployment_id
LIMIT %(limit)s
"""


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register ``deployments`` on the sub-command parser."""
    deployments = commands.add_parser(
        "deployments", parents=[common], help="list deployments and the functions they serve"
    )
    deployments.add_argument("--function", metavar="NAME", help="only those serving NAME")
    deployments.add_argument(
        "--live", action="store_true", help="only those with a heartbeat within --ttl"
    )
    deployments.add_argument(
        "--ttl",
        type=positive_float,
        default=DEFAULT_TTL,
        metavar="S",
        help=f"a heartbeat older than this is stale ({DEFAULT_TTL:g})",
    )
    deployments.add_argument(
        "--limit", type=positive_int, default=100, metavar="N", help="at most N (100)"
    )
    deployments.add_argument("--schema", default=DEPLOYMENT_SCHEMA, help=f"({DEPLOYMENT_SCHEMA})")
    deployments.set_defaults(run=list_deployments)


def list_deployments(args: argparse.Namespace, out: Output) -> int:
    query = render(LIST_DEPLOYMENTS, validate_schema_name(args.schema))
    params = {
        "ttl": args.ttl,
        "function": args.function,
        "live_only": args.live,
        "limit": args.limit,
    }
    with connect(args) as conn, expect_tables(args.schema, "deployment"):
        found = conn.cursor(row_factory=dict_row).execute(query, params).fetchall()
    if out.json_mode:
        out.json(
            [
                {
                    "deploymentId": row["deployment_id"],
                    "endpoint": row["endpoint"],
                    "functions": row["functions"],
                    "lastHeartbeat": row["last_heartbeat"].isoformat(),
                    "createdAt": row["created_at"].isoformat(),
                    "live": row["live"],
                }
                for row in found
            ]
        )
        return EXIT_OK
    out.table(
        [
            Column("deployment", 36),
            Column("endpoint", 40),
            Column("state", 5, status=True),
            Column("last beat", 10),
            Column("functions", 60),
            Column("registered", 20),
        ],
        [
            [
                row["deployment_id"],
                row["endpoint"],
                "live" if row["live"] else "stale",
                fmt_duration(row["age"]) + " ago",
                ", ".join(row["functions"]),
                fmt_time(row["created_at"]),
            ]
            for row in found
        ],
        empty="no deployments" + (f" serve {args.function!r}" if args.function else ""),
    )
    return EXIT_OK
