"""``deployments [--function NAME]``: the registry of running deployments."""

from __future__ import annotations

import argparse
from typing import Any

from pikku_pg._cli._common import EXIT_OK, connect, expect_tables, positive_float, positive_int
from pikku_pg._cli.output import Column, Output, fmt_duration, fmt_time
from pikku_pg._schema import validate_schema_name
from pikku_pg._sync.deployment import DEFAULT_HEARTBEAT_TTL, PgDeploymentService
from pikku_pg.models.deployment import DeploymentStatus


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
        default=DEFAULT_HEARTBEAT_TTL,
        metavar="S",
        help=f"a heartbeat older than this is stale ({DEFAULT_HEARTBEAT_TTL:g})",
    )
    deployments.add_argument(
        "--limit", type=positive_int, default=100, metavar="N", help="at most N (100)"
    )
    schema = PgDeploymentService.default_schema
    deployments.add_argument("--schema", default=schema, help=f"({schema})")
    deployments.set_defaults(run=list_deployments)


def list_deployments(args: argparse.Namespace, out: Output) -> int:
    validate_schema_name(args.schema)  # before connecting
    with connect(args) as conn, expect_tables(args.schema, "deployment"):
        registry = PgDeploymentService(conn, args.schema)
        found = registry.list_deployments(
            function=args.function, live_only=args.live, ttl=args.ttl, limit=args.limit
        )
    if out.json_mode:
        out.json([_json(status) for status in found])
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
                status.deployment_id,
                status.endpoint,
                "live" if status.live else "stale",
                fmt_duration(status.heartbeat_age) + " ago",
                ", ".join(status.functions),
                fmt_time(status.created_at),
            ]
            for status in found
        ],
        empty="no deployments" + (f" serve {args.function!r}" if args.function else ""),
    )
    return EXIT_OK


def _json(status: DeploymentStatus) -> dict[str, Any]:
    """The camelCase shape scripts read (the heartbeat age is left to them)."""
    return {
        "deploymentId": status.deployment_id,
        "endpoint": status.endpoint,
        "functions": status.functions,
        "lastHeartbeat": status.last_heartbeat.isoformat(),
        "createdAt": status.created_at.isoformat(),
        "live": status.live,
    }
