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

from dataclasses import dataclass
from types import MappingProxyType

from pikku_pg._sql import QuerySet, compose, statement
from pikku_pg._sql.workflow import (
    _RUN_COLUMNS,
    _RUN_STATE_SET,
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

# The jobs of one run, whatever their kind: ownership checks (resume, take-over, the
# console's activity), cancellation, and the cascade when a run is deleted.
V3_JOBS_BY_RUN = """\
CREATE INDEX IF NOT EXISTS workflow_jobs_run_idx ON {schema}.workflow_jobs (workflow_run_id);
"""

WORKFLOW_QUEUE = Component(
    "workflow_queue",
    (
        Migration(1, "job table of queued workflow runs", V1_JOBS),
        Migration(2, "retry back-off of queued steps", V2_STEP_BACKOFF),
        Migration(3, "jobs by run", V3_JOBS_BY_RUN),
    ),
    default_schema="pikku_workflow",  # beside the workflow tables it references
)
#: For ``pikku_pg._components`` (apply after the ``workflow`` component: it references
#: ``workflow_runs``).
COMPONENT = WORKFLOW_QUEUE

# A new running run (``{inline}``: queued or inline), the first CTE of both starts.
_NEW_RUN = """\
INSERT INTO {schema}.workflow_runs (workflow, status, input, inline, graph_hash, wire)
  VALUES (%(workflow)s, 'running', %(input)s, {inline}, %(graph_hash)s, %(wire)s)
  RETURNING workflow_run_id"""

# A run and its first replay job, in one statement (so a run is never left without
# the job that runs it).
START_RUN = compose(
    """\
WITH r AS (
  {new_run}
), j AS (
  INSERT INTO {schema}.workflow_jobs (workflow_run_id, kind)
  SELECT workflow_run_id, 'replay' FROM r
)
SELECT r.workflow_run_id::text, pg_notify(%(channel)s, '') FROM r
""",
    new_run=compose(_NEW_RUN, inline="false"),
)

# An inline run and its replay job, created already claimed by the caller (one
# statement): if the caller dies, the lease runs out and a worker takes the run over.
# The caller makes the token, so it can hand the run back even if it is interrupted
# before this statement's answer arrives.
START_INLINE_RUN = compose(
    """\
WITH r AS (
  {new_run}
), j AS (
  INSERT INTO {schema}.workflow_jobs
    (workflow_run_id, kind, status, attempts, lease_token, locked_by, locked_until)
  SELECT workflow_run_id, 'replay', 'running', 1, %(token)s::uuid, %(owner)s,
         now() + make_interval(secs => %(lease)s::float8)
  FROM r
  RETURNING job_id
)
SELECT r.workflow_run_id::text, j.job_id FROM r, j
""",
    new_run=compose(_NEW_RUN, inline="true"),
)

# No job of the run is held by a live lease (nobody is running it now).
_NOBODY_HOLDS = """\
NOT EXISTS (SELECT FROM {schema}.workflow_jobs AS held
            WHERE held.workflow_run_id = %(run_id)s AND held.status = 'running'
              AND held.locked_until >= now())"""

# resume_run of a running run whose owner is gone (its lease ran out, or it never had
# a job): its replay job becomes due now. A run whose job waits in the queue already
# (handed back, sleeping) is left as it is, and so is a job that a worker claims at
# the same moment. Row: (adopted, already queued).
ADOPT_RUN = compose(
    """\
WITH r AS (
  SELECT workflow_run_id FROM {schema}.workflow_runs
  WHERE workflow_run_id = %(run_id)s AND status = 'running' AND {nobody_holds}
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
""",
    nobody_holds=_NOBODY_HOLDS,
)

# resume_to_completion: the caller claims the run's replay job (creating it if the run
# has none) when nobody holds the run. No row: somebody does.
TAKE_OVER_RUN = compose(
    """\
WITH r AS (
  SELECT workflow_run_id FROM {schema}.workflow_runs
  WHERE workflow_run_id = %(run_id)s AND status = 'running' AND {nobody_holds}
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
""",
    nobody_holds=_NOBODY_HOLDS,
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
# Only a claimed (running) job has a token, so the token alone names the claim: a
# status test here would invite the planner, on lagging statistics, to AND in the
# index of every running job.
_FENCE_CTE = """\
f AS (
  SELECT workflow_run_id FROM {schema}.workflow_jobs
  WHERE lease_token = %(token)s::uuid
  FOR SHARE
)"""
_IN_FENCE = "workflow_run_id IN (SELECT workflow_run_id FROM f)"
_FENCE = MappingProxyType(
    {
        "fence": compose("{fence_cte}, ", fence_cte=_FENCE_CTE),
        "guard": compose("status <> 'succeeded' AND {in_fence}", in_fence=_IN_FENCE),
        "fenced": "EXISTS (SELECT FROM f)",
    }
)

# A step job's run continues: queue its next replay. Row: (queued, lease held).
ENQUEUE_REPLAY = compose(
    """\
WITH {fence_cte}, r AS (
  SELECT workflow_run_id FROM {schema}.workflow_runs
  WHERE workflow_run_id = %(run_id)s AND status = 'running' AND {in_fence}
), j AS (
{upsert_replay}
)
SELECT EXISTS (SELECT FROM j), EXISTS (SELECT FROM f),
       CASE WHEN EXISTS (SELECT FROM j) THEN pg_notify(%(channel)s, '') END
""",
    fence_cte=_FENCE_CTE,
    in_fence=_IN_FENCE,
    upsert_replay=compose(_UPSERT_REPLAY, source="r"),
)

# resume_run: a suspended or failed run becomes running (error cleared) and, when
# asked, gets a replay job. Returns whether the run was reopened.
REOPEN_RUN = compose(
    """\
WITH r AS (
  UPDATE {schema}.workflow_runs
  SET status = 'running', error = NULL, output = NULL, updated_at = now()
  WHERE workflow_run_id = %(run_id)s AND status IN ('suspended', 'failed')
  RETURNING workflow_run_id
), j AS (
{upsert_replay}
)
SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM j),
       CASE WHEN EXISTS (SELECT FROM j) THEN pg_notify(%(channel)s, '') END
""",
    upsert_replay=compose(_UPSERT_REPLAY, source="r WHERE %(enqueue)s"),
)

# Row: (queued, lease held).
ENQUEUE_STEP = compose(
    """\
WITH {fence_cte}, j AS (
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
""",
    fence_cte=_FENCE_CTE,
)

# Jobs whose lease ran out (their worker died) first, then due pending jobs: a
# crashed worker's run is taken over within one lease even behind a backlog.
# The claim returns each job with a snapshot of its run (and whether the run has
# steps yet), so a replay pass starts without two more round trips.
CLAIM = compose(
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
       {run_columns}
FROM u
LEFT JOIN {schema}.workflow_runs ON workflow_runs.workflow_run_id = u.job_run_id
""",
    run_columns=_RUN_COLUMNS,
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
FINISH_RUN = compose(
    """\
WITH {fence_cte}, u AS (
  UPDATE {schema}.workflow_runs
  SET status = %(status)s, output = %(output)s, error = %(error)s, updated_at = now()
  WHERE workflow_run_id = %(run_id)s AND status = 'running' AND {in_fence}
  RETURNING 1
)
SELECT (SELECT count(*) FROM u), EXISTS (SELECT FROM f)
""",
    fence_cte=_FENCE_CTE,
    in_fence=_IN_FENCE,
)

# ctx.update_run_state. Row: (changed, lease held).
UPDATE_RUN_STATE = compose(
    """\
WITH {fence_cte}, u AS (
  UPDATE {schema}.workflow_runs
{run_state_set}
  WHERE workflow_run_id = %(run_id)s AND {in_fence}
  RETURNING 1
)
SELECT (SELECT count(*) FROM u), EXISTS (SELECT FROM f)
""",
    fence_cte=_FENCE_CTE,
    run_state_set=_RUN_STATE_SET,
    in_fence=_IN_FENCE,
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
BEGIN_STEP = compose(
    """\
WITH {fence_cte}, r AS (
  SELECT workflow_run_id FROM {schema}.workflow_runs
  WHERE workflow_run_id = %(run_id)s AND status = 'running' AND {in_fence}
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
""",
    fence_cte=_FENCE_CTE,
    in_fence=_IN_FENCE,
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

# The claim a lease token names (an inline caller interrupted before it knew its run).
JOB_OF_TOKEN = """\
SELECT job_id, workflow_run_id::text FROM {schema}.workflow_jobs
WHERE lease_token = %(token)s::uuid
"""

RUN_STATUS = """\
SELECT status::text FROM {schema}.workflow_runs WHERE workflow_run_id = %(run_id)s
"""

# What each run is doing now: the job that says most (a live lease first, then the
# earliest due), or none. Row per run id: (run id, job status, run_at, locked_by,
# lease live).
RUN_ACTIVITY = """\
SELECT r.id::text, j.status, j.run_at, j.locked_by, j.locked_until >= now()
FROM unnest(%(run_ids)s::uuid[]) AS r(id)
JOIN {schema}.workflow_runs AS run ON run.workflow_run_id = r.id
LEFT JOIN LATERAL (
  SELECT status, run_at, locked_by, locked_until FROM {schema}.workflow_jobs
  WHERE workflow_run_id = r.id
  ORDER BY status = 'running' AND locked_until >= now() DESC, run_at
  LIMIT 1
) AS j ON true
"""

JOBS_OF_RUN = """\
SELECT job_id, kind, step_name, status, run_at, rerun_at, attempts, locked_by,
       locked_until, last_error
FROM {schema}.workflow_jobs
WHERE workflow_run_id = %(run_id)s
ORDER BY job_id
"""


@dataclass(frozen=True)
class QueueQueries(QuerySet):
    """The statements of the ``workflow_queue`` component (the job queue and the
    engine's fenced writes)."""

    start_run: bytes = statement(START_RUN)
    start_inline_run: bytes = statement(START_INLINE_RUN)
    adopt_run: bytes = statement(ADOPT_RUN)
    take_over_run: bytes = statement(TAKE_OVER_RUN)
    enqueue_replay: bytes = statement(ENQUEUE_REPLAY)
    reopen_run: bytes = statement(REOPEN_RUN)
    enqueue_step: bytes = statement(ENQUEUE_STEP)
    claim: bytes = statement(CLAIM)
    extend_leases: bytes = statement(EXTEND_LEASES)
    ack: bytes = statement(ACK)
    reschedule: bytes = statement(RESCHEDULE)
    release: bytes = statement(RELEASE)
    next_due: bytes = statement(NEXT_DUE)
    finish_run: bytes = statement(FINISH_RUN)
    update_run_state: bytes = statement(UPDATE_RUN_STATE)
    cancel_run: bytes = statement(CANCEL_RUN)
    begin_step: bytes = statement(BEGIN_STEP)
    set_step_running: bytes = statement(SET_STEP_RUNNING)
    set_step_scheduled: bytes = statement(SET_STEP_SCHEDULED)
    set_step_result: bytes = statement(SET_STEP_RESULT)
    set_step_error: bytes = statement(SET_STEP_ERROR)
    retry_attempt: bytes = statement(RETRY_ATTEMPT)
    job_of_token: bytes = statement(JOB_OF_TOKEN)
    run_status: bytes = statement(RUN_STATUS)
    run_activity: bytes = statement(RUN_ACTIVITY)
    jobs_of_run: bytes = statement(JOBS_OF_RUN)
