"""SQL of the ``workflow_queue`` component: the job table of queued workflow runs.

One table, ``workflow_jobs``, beside the TypeScript tables of the ``workflow``
component (additive only: TypeScript writers never see it). Two kinds of job:

* ``replay``: run a replay pass of a run. At most one replay job exists per run (a
  partial unique index), so a burst of resumes queues one replay. A resume that
  arrives while the replay job runs sets ``rerun_at``; when the running pass ends
  the job goes back to ``pending`` at that time instead of being deleted.
* ``step``: run one ``queued=True`` RPC step of a run, on any worker.

A claim (``FOR UPDATE SKIP LOCKED``) sets a lease: ``lease_token`` names the
claim and ``locked_until`` its expiry, extended by the worker's heartbeat. A job
whose lease ran out (its worker died) is claimed again. Acks name the lease token,
so a worker that lost its lease cannot touch the job any more. Every change that
makes a job due sends a NOTIFY on the schema's channel, so idle workers wake at
once.

The run-status statements here are conditional (``WHERE status = 'running'``), so
a run that was cancelled meanwhile stays cancelled.

Fencing: every write a runner makes for a run (its steps, attempts, run state and
final status, the jobs it queues) names the lease token of the job it holds and
is applied, in the same statement, only while that token is still the job's
(``_FENCE``). An inline run (``run_to_completion``) holds a lease too: its replay
job is created already claimed by the caller, so a run always has an owner or a
job that any worker can claim.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from pikku_pg._sql import render
from pikku_pg._sql.workflow import (
    RUN_COLUMNS,
    RUN_STATE_SET,
    retry_attempt,
    step_transition,
)
from pikku_pg.migrations import Component, Migration

V1_JOBS = """\
CREATE TABLE IF NOT EXISTS {schema}.workflow_jobs (
  job_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  workflow_run_id UUID NOT NULL
    REFERENCES {schema}.workflow_runs(workflow_run_id) ON DELETE CASCADE,
  kind TEXT NOT NULL CHECK (kind IN ('replay', 'step')),
  step_name TEXT,
  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running')),
  run_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  rerun_at TIMESTAMPTZ,
  attempts INTEGER NOT NULL DEFAULT 0,
  lease_token UUID,
  locked_by TEXT,
  locked_until TIMESTAMPTZ,
  last_error JSONB,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  CHECK ((kind = 'step') = (step_name IS NOT NULL))
);

-- At most one replay job per run; at most one job per queued step.
CREATE UNIQUE INDEX IF NOT EXISTS workflow_jobs_replay_uq
  ON {schema}.workflow_jobs (workflow_run_id) WHERE kind = 'replay';
CREATE UNIQUE INDEX IF NOT EXISTS workflow_jobs_step_uq
  ON {schema}.workflow_jobs (workflow_run_id, step_name) WHERE kind = 'step';
-- The claim: due pending jobs, and running jobs whose lease ran out.
CREATE INDEX IF NOT EXISTS workflow_jobs_due_idx
  ON {schema}.workflow_jobs (run_at, job_id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS workflow_jobs_lease_idx
  ON {schema}.workflow_jobs (locked_until) WHERE status = 'running';
-- Heartbeats and hand-backs by lease token.
CREATE INDEX IF NOT EXISTS workflow_jobs_token_idx
  ON {schema}.workflow_jobs (lease_token) WHERE lease_token IS NOT NULL;
"""

# The retry back-off of a queued RPC step travels with its job (the TypeScript step
# row has only retries and retry_delay).
V2_STEP_BACKOFF = """\
ALTER TABLE {schema}.workflow_jobs
  ADD COLUMN IF NOT EXISTS backoff TEXT NOT NULL DEFAULT 'fixed'
    CHECK (backoff IN ('fixed', 'exponential'));
"""

WORKFLOW_QUEUE = Component(
    "workflow_queue",
    (
        Migration(1, "job table of queued workflow runs", V1_JOBS),
        Migration(2, "retry back-off of queued steps", V2_STEP_BACKOFF),
    ),
)
#: For ``pikku_pg._components`` (apply after the ``workflow`` component: it references
#: ``workflow_runs``).
COMPONENT = WORKFLOW_QUEUE

# A run and its first replay job, in one statement (so a run is never left without
# the job that runs it).
START_RUN = """\
WITH r AS (
  INSERT INTO {schema}.workflow_runs (workflow, status, input, inline, graph_hash, wire)
  VALUES (%(workflow)s, 'running', %(input)s, false, %(graph_hash)s, %(wire)s)
  RETURNING workflow_run_id
), j AS (
  INSERT INTO {schema}.workflow_jobs (workflow_run_id, kind)
  SELECT workflow_run_id, 'replay' FROM r
)
SELECT r.workflow_run_id::text, pg_notify(%(channel)s, '') FROM r
"""

# An inline run and its replay job, created already claimed by the caller (one
# statement): if the caller dies, the lease runs out and a worker takes the run over.
# The caller may name the lease token, to find its claim if interrupted before it
# read this statement's row (CLAIM_OF).
START_INLINE_RUN = """\
WITH r AS (
  INSERT INTO {schema}.workflow_runs (workflow, status, input, inline, graph_hash, wire)
  VALUES (%(workflow)s, 'running', %(input)s, true, %(graph_hash)s, %(wire)s)
  RETURNING workflow_run_id
), j AS (
  INSERT INTO {schema}.workflow_jobs
    (workflow_run_id, kind, status, attempts, lease_token, locked_by, locked_until)
  SELECT workflow_run_id, 'replay', 'running', 1,
         COALESCE(%(token)s::uuid, gen_random_uuid()), %(owner)s,
         now() + make_interval(secs => %(lease)s::float8)
  FROM r
  RETURNING job_id, lease_token
)
SELECT r.workflow_run_id::text, j.job_id, j.lease_token::text FROM r, j
"""

# The replay job claimed under a lease token, if it exists.
CLAIM_OF = """\
SELECT job_id, workflow_run_id::text, attempts FROM {schema}.workflow_jobs
WHERE lease_token = %(token)s::uuid AND status = 'running'
"""

# No job of the run is held by a live lease (nobody is running it now).
_NOBODY_HOLDS = """\
NOT EXISTS (SELECT FROM {schema}.workflow_jobs AS held
            WHERE held.workflow_run_id = %(run_id)s AND held.status = 'running'
              AND held.locked_until >= now())"""

# resume_run of a running run whose owner is gone (its lease ran out, or it never had
# a job): its replay job becomes due now. A run whose job waits in the queue already
# (handed back, sleeping) is left as it is, and so is a job that a worker claims at
# the same moment. Row: (adopted, already queued).
ADOPT_RUN = (
    """\
WITH r AS (
  SELECT workflow_run_id FROM {schema}.workflow_runs
  WHERE workflow_run_id = %(run_id)s AND status = 'running' AND """
    + _NOBODY_HOLDS
    + """
), j AS (
  INSERT INTO {schema}.workflow_jobs AS j (workflow_run_id, kind)
  SELECT workflow_run_id, 'replay' FROM r
  ON CONFLICT (workflow_run_id) WHERE kind = 'replay' DO UPDATE SET
    status = 'pending', run_at = now(), rerun_at = NULL, lease_token = NULL,
    locked_by = NULL, locked_until = NULL, updated_at = now()
  WHERE j.status = 'running' AND j.locked_until < now()
  RETURNING 1
)
SELECT EXISTS (SELECT FROM j),
       EXISTS (SELECT FROM {schema}.workflow_jobs AS q
               WHERE q.workflow_run_id = %(run_id)s AND q.status = 'pending'),
       CASE WHEN EXISTS (SELECT FROM j) THEN pg_notify(%(channel)s, '') END
"""
)

# resume_to_completion: the caller claims the run's replay job (creating it if the run
# has none) when nobody holds the run. No row: somebody does.
TAKE_OVER_RUN = (
    """\
WITH r AS (
  SELECT workflow_run_id FROM {schema}.workflow_runs
  WHERE workflow_run_id = %(run_id)s AND status = 'running' AND """
    + _NOBODY_HOLDS
    + """
)
INSERT INTO {schema}.workflow_jobs AS j
  (workflow_run_id, kind, status, attempts, lease_token, locked_by, locked_until)
SELECT workflow_run_id, 'replay', 'running', 1, gen_random_uuid(), %(owner)s,
       now() + make_interval(secs => %(lease)s::float8)
FROM r
ON CONFLICT (workflow_run_id) WHERE kind = 'replay' DO UPDATE SET
  status = 'running', lease_token = EXCLUDED.lease_token, locked_by = EXCLUDED.locked_by,
  locked_until = EXCLUDED.locked_until, attempts = j.attempts + 1, rerun_at = NULL,
  updated_at = now()
WHERE j.status = 'pending' OR j.locked_until < now()
RETURNING job_id, lease_token::text, attempts
"""
)

_UPSERT_REPLAY = """\
INSERT INTO {schema}.workflow_jobs AS j (workflow_run_id, kind, run_at)
SELECT workflow_run_id, 'replay', now() + make_interval(secs => %(delay)s::float8)
FROM {source}
ON CONFLICT (workflow_run_id) WHERE kind = 'replay' DO UPDATE SET
  run_at = CASE WHEN j.status = 'pending' THEN LEAST(j.run_at, EXCLUDED.run_at)
           ELSE j.run_at END,
  rerun_at = CASE WHEN j.status = 'running' THEN LEAST(j.rerun_at, EXCLUDED.run_at)
             ELSE j.rerun_at END,
  updated_at = now()
RETURNING 1"""

# The fence of a runner's writes (see the module docstring). FOR SHARE orders the
# write against a claim that takes the job over at the same moment: either the write
# commits first (and the new owner sees it), or it waits, sees the new token and is
# refused. The statements join it in as "IN (SELECT workflow_run_id FROM f)" and
# report "EXISTS (SELECT FROM f)", so a refusal is told apart from a cancelled run.
_FENCE_CTE = """\
f AS (
  SELECT workflow_run_id FROM {schema}.workflow_jobs
  WHERE lease_token = %(token)s::uuid AND status = 'running'
  FOR SHARE
)"""
_IN_FENCE = "workflow_run_id IN (SELECT workflow_run_id FROM f)"
_FENCE = {
    "fence": _FENCE_CTE + ", ",
    "guard": "status <> 'succeeded' AND " + _IN_FENCE,
    "fenced": "EXISTS (SELECT FROM f)",
}

# A step job's run continues: queue its next replay. Row: (queued, lease held).
ENQUEUE_REPLAY = (
    """\
WITH """
    + _FENCE_CTE
    + """, r AS (
  SELECT workflow_run_id FROM {schema}.workflow_runs
  WHERE workflow_run_id = %(run_id)s AND status = 'running' AND """
    + _IN_FENCE
    + """
), j AS (
"""
    + _UPSERT_REPLAY.replace("{source}", "r")
    + """
)
SELECT EXISTS (SELECT FROM j), EXISTS (SELECT FROM f),
       CASE WHEN EXISTS (SELECT FROM j) THEN pg_notify(%(channel)s, '') END
"""
)

# resume_run: a suspended or failed run becomes running (error cleared) and, when
# asked, gets a replay job. Returns whether the run was reopened.
REOPEN_RUN = (
    """\
WITH r AS (
  UPDATE {schema}.workflow_runs
  SET status = 'running', error = NULL, output = NULL, updated_at = now()
  WHERE workflow_run_id = %(run_id)s AND status IN ('suspended', 'failed')
  RETURNING workflow_run_id
), j AS (
"""
    + _UPSERT_REPLAY.replace("{source}", "r WHERE %(enqueue)s")
    + """
)
SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM j),
       CASE WHEN EXISTS (SELECT FROM j) THEN pg_notify(%(channel)s, '') END
"""
)

# Row: (queued, lease held).
ENQUEUE_STEP = (
    """\
WITH """
    + _FENCE_CTE
    + """, j AS (
  INSERT INTO {schema}.workflow_jobs AS j (workflow_run_id, kind, step_name, run_at, backoff)
  SELECT workflow_run_id, 'step', %(step_name)s,
         now() + make_interval(secs => %(delay)s::float8), %(backoff)s
  FROM f WHERE workflow_run_id = %(run_id)s
  ON CONFLICT (workflow_run_id, step_name) WHERE kind = 'step' DO UPDATE SET
    run_at = CASE WHEN j.status = 'pending' THEN LEAST(j.run_at, EXCLUDED.run_at)
             ELSE j.run_at END,
    updated_at = now()
  RETURNING 1
)
SELECT EXISTS (SELECT FROM j), EXISTS (SELECT FROM f),
       CASE WHEN EXISTS (SELECT FROM j) THEN pg_notify(%(channel)s, '') END
"""
)

# Jobs whose lease ran out (their worker died) first, then due pending jobs: a
# crashed worker's run is taken over within one lease even behind a backlog.
# The claim returns each job with a snapshot of its run (and whether the run has
# steps yet), so a replay pass starts without two more round trips.
CLAIM = (
    """\
WITH due AS (
  SELECT job_id FROM {schema}.workflow_jobs
  WHERE status = 'pending' AND run_at <= now()
  ORDER BY run_at, job_id
  LIMIT %(limit)s
  FOR UPDATE SKIP LOCKED
), expired AS (
  SELECT job_id FROM {schema}.workflow_jobs
  WHERE status = 'running' AND locked_until < now()
  ORDER BY locked_until
  LIMIT %(limit)s
  FOR UPDATE SKIP LOCKED
), c AS (
  SELECT job_id FROM expired UNION ALL SELECT job_id FROM due LIMIT %(limit)s
), u AS (
  UPDATE {schema}.workflow_jobs AS j
  SET status = 'running', lease_token = gen_random_uuid(), locked_by = %(worker)s,
      locked_until = now() + make_interval(secs => %(lease)s::float8),
      attempts = j.attempts + 1, updated_at = now()
  FROM c
  WHERE j.job_id = c.job_id
  RETURNING j.job_id AS job_id, j.workflow_run_id AS job_run_id, j.kind AS kind,
            j.step_name AS step_name, j.lease_token::text AS lease_token,
            j.attempts AS attempts, j.backoff AS backoff
)
SELECT u.job_id, u.job_run_id::text AS job_run_id, u.kind, u.step_name, u.lease_token,
       u.attempts, u.backoff,
       EXISTS (SELECT FROM {schema}.workflow_step AS s
               WHERE s.workflow_run_id = u.job_run_id) AS has_steps,
       """
    + RUN_COLUMNS
    + """
FROM u
LEFT JOIN {schema}.workflow_runs ON workflow_runs.workflow_run_id = u.job_run_id
"""
)

EXTEND_LEASES = """\
UPDATE {schema}.workflow_jobs
SET locked_until = now() + make_interval(secs => %(lease)s::float8)
WHERE lease_token = ANY(%(tokens)s::uuid[])
"""

# The job is done: deleted, unless a resume asked for another replay meanwhile.
ACK = """\
WITH d AS (
  DELETE FROM {schema}.workflow_jobs
  WHERE job_id = %(job_id)s AND lease_token = %(token)s AND rerun_at IS NULL
  RETURNING 1
), u AS (
  UPDATE {schema}.workflow_jobs
  SET status = 'pending', run_at = rerun_at, rerun_at = NULL, lease_token = NULL,
      locked_by = NULL, locked_until = NULL, last_error = NULL, updated_at = now()
  WHERE job_id = %(job_id)s AND lease_token = %(token)s AND rerun_at IS NOT NULL
  RETURNING 1
)
SELECT (SELECT count(*) FROM d) + (SELECT count(*) FROM u),
       CASE WHEN EXISTS (SELECT FROM u) THEN pg_notify(%(channel)s, '') END
"""

# The job runs again later (a sleep, a retry delay, a hand-back, an error back-off).
RESCHEDULE = """\
WITH u AS (
  UPDATE {schema}.workflow_jobs
  SET status = 'pending',
      run_at = LEAST(rerun_at, now() + make_interval(secs => %(delay)s::float8)),
      rerun_at = NULL, lease_token = NULL, locked_by = NULL, locked_until = NULL,
      last_error = %(error)s, updated_at = now()
  WHERE job_id = %(job_id)s AND lease_token = %(token)s
  RETURNING 1
)
SELECT pg_notify(%(channel)s, '') FROM u
"""

# Graceful stop: hand the jobs back at once (no waiting for lease expiry).
RELEASE = """\
WITH u AS (
  UPDATE {schema}.workflow_jobs
  SET status = 'pending', run_at = LEAST(rerun_at, now()), rerun_at = NULL,
      lease_token = NULL, locked_by = NULL, locked_until = NULL, updated_at = now()
  WHERE lease_token = ANY(%(tokens)s::uuid[])
  RETURNING 1
)
SELECT count(*), CASE WHEN count(*) > 0 THEN pg_notify(%(channel)s, '') END FROM u
"""

# Seconds until the next job is due (pending) or a lease runs out (running).
NEXT_DUE = """\
SELECT extract(epoch FROM LEAST(
  (SELECT min(run_at) FROM {schema}.workflow_jobs WHERE status = 'pending'),
  (SELECT min(locked_until) FROM {schema}.workflow_jobs WHERE status = 'running')
) - now())::float8
"""

# A pass ended: the run moves from running to its final (or suspended) status.
# Row: (changed, lease held).
FINISH_RUN = (
    """\
WITH """
    + _FENCE_CTE
    + """, u AS (
  UPDATE {schema}.workflow_runs
  SET status = %(status)s, output = %(output)s, error = %(error)s, updated_at = now()
  WHERE workflow_run_id = %(run_id)s AND status = 'running' AND """
    + _IN_FENCE
    + """
  RETURNING 1
)
SELECT (SELECT count(*) FROM u), EXISTS (SELECT FROM f)
"""
)

# ctx.update_run_state. Row: (changed, lease held).
UPDATE_RUN_STATE = (
    """\
WITH """
    + _FENCE_CTE
    + """, u AS (
  UPDATE {schema}.workflow_runs
"""
    + RUN_STATE_SET
    + """
  WHERE workflow_run_id = %(run_id)s AND """
    + _IN_FENCE
    + """
  RETURNING 1
)
SELECT (SELECT count(*) FROM u), EXISTS (SELECT FROM f)
"""
)

CANCEL_RUN = """\
WITH r AS (
  UPDATE {schema}.workflow_runs
  SET status = 'cancelled', error = %(error)s, updated_at = now()
  WHERE workflow_run_id = %(run_id)s AND status IN ('running', 'suspended')
  RETURNING workflow_run_id
), d AS (
  DELETE FROM {schema}.workflow_jobs
  WHERE workflow_run_id IN (SELECT workflow_run_id FROM r) AND status = 'pending'
)
SELECT count(*) FROM r
"""

# The engine's hot path: a new step and its first attempt (``running``, or ``pending``
# for a queued RPC step or a sleep), only while the run is running and the writer's
# lease holds. One statement instead of three (status check, insert, running); the
# same rows as the state store's insert_step_state (+ set_step_running). Row: (step
# id or NULL when the run is not running, lease held).
BEGIN_STEP = (
    """\
WITH """
    + _FENCE_CTE
    + """, r AS (
  SELECT workflow_run_id FROM {schema}.workflow_runs
  WHERE workflow_run_id = %(run_id)s AND status = 'running' AND """
    + _IN_FENCE
    + """
), s AS (
  INSERT INTO {schema}.workflow_step
    (workflow_run_id, step_name, rpc_name, data, status, retries, retry_delay)
  SELECT workflow_run_id, %(step_name)s, %(rpc_name)s, %(data)s,
         CASE WHEN %(running)s THEN 'running' ELSE 'pending' END::{schema}.step_status_enum,
         %(retries)s, %(retry_delay)s
  FROM r
  RETURNING workflow_step_id, status
), h AS (
  INSERT INTO {schema}.workflow_step_history
    (workflow_step_id, status, created_at, running_at)
  SELECT workflow_step_id, status, clock_timestamp(),
         CASE WHEN %(running)s THEN clock_timestamp() END
  FROM s
)
SELECT (SELECT workflow_step_id::text FROM s), EXISTS (SELECT FROM f)
"""
)

# The engine's step transitions and new attempts, fenced.
SET_STEP_RUNNING = step_transition("running", "running_at", fence=_FENCE)
SET_STEP_SCHEDULED = step_transition("scheduled", "scheduled_at", fence=_FENCE)
SET_STEP_RESULT = step_transition(
    "succeeded",
    "succeeded_at",
    ", result = %(result)s, error = NULL",
    ", result = %(result)s, error = NULL",
    fence=_FENCE,
)
SET_STEP_ERROR = step_transition(
    "failed",
    "failed_at",
    ", error = %(error)s, result = NULL",
    ", error = %(error)s, result = NULL",
    fence=_FENCE,
)
RETRY_ATTEMPT = retry_attempt(fence=_FENCE)

RUN_STATUS = """\
SELECT status::text FROM {schema}.workflow_runs WHERE workflow_run_id = %(run_id)s
"""

JOBS_OF_RUN = """\
SELECT job_id, kind, step_name, status, run_at, rerun_at, attempts, locked_by,
       locked_until, last_error
FROM {schema}.workflow_jobs
WHERE workflow_run_id = %(run_id)s
ORDER BY job_id
"""


@dataclass(frozen=True)
class QueueQueries:
    """The queue statements rendered for one schema."""

    start_run: bytes
    start_inline_run: bytes
    claim_of: bytes
    adopt_run: bytes
    take_over_run: bytes
    enqueue_replay: bytes
    reopen_run: bytes
    enqueue_step: bytes
    claim: bytes
    extend_leases: bytes
    ack: bytes
    reschedule: bytes
    release: bytes
    next_due: bytes
    finish_run: bytes
    cancel_run: bytes
    begin_step: bytes
    update_run_state: bytes
    set_step_running: bytes
    set_step_scheduled: bytes
    set_step_result: bytes
    set_step_error: bytes
    retry_attempt: bytes
    run_status: bytes
    jobs_of_run: bytes


_TEMPLATES = {
    "start_run": START_RUN,
    "start_inline_run": START_INLINE_RUN,
    "claim_of": CLAIM_OF,
    "adopt_run": ADOPT_RUN,
    "take_over_run": TAKE_OVER_RUN,
    "enqueue_replay": ENQUEUE_REPLAY,
    "reopen_run": REOPEN_RUN,
    "enqueue_step": ENQUEUE_STEP,
    "claim": CLAIM,
    "extend_leases": EXTEND_LEASES,
    "ack": ACK,
    "reschedule": RESCHEDULE,
    "release": RELEASE,
    "next_due": NEXT_DUE,
    "finish_run": FINISH_RUN,
    "cancel_run": CANCEL_RUN,
    "begin_step": BEGIN_STEP,
    "update_run_state": UPDATE_RUN_STATE,
    "set_step_running": SET_STEP_RUNNING,
    "set_step_scheduled": SET_STEP_SCHEDULED,
    "set_step_result": SET_STEP_RESULT,
    "set_step_error": SET_STEP_ERROR,
    "retry_attempt": RETRY_ATTEMPT,
    "run_status": RUN_STATUS,
    "jobs_of_run": JOBS_OF_RUN,
}
assert set(_TEMPLATES) == {f.name for f in fields(QueueQueries)}


def queue_queries(schema: str) -> QueueQueries:
    """Render every queue statement for ``schema`` (validated by the caller)."""
    return QueueQueries(**{name: render(sql, schema) for name, sql in _TEMPLATES.items()})
