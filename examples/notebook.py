"""A notebook-style tour of the sync API with a conninfo string.

Run it as a script, or open it in Jupyter / VS Code (each ``# %%`` is a cell)::

    DATABASE_URL=postgresql://localhost/app python examples/notebook.py

Without ``DATABASE_URL`` it starts a throw-away embedded PostgreSQL
(``pip install 'pikku-pg[embedded]'``). ``PIKKU_SCHEMA`` puts every table in one
schema of your choice (by default each service uses its own: ``pikku_ai``,
``pikku_workflow``, ``pikku``).
"""

# %% Connect: a conninfo string is all a service needs (it owns a small pool).
from __future__ import annotations

import os

from pikku_pg import (
    PgAIStorageService,
    PgWorkflowRunService,
    PgWorkflowService,
    WorkflowContext,
)

DSN = os.environ.get("DATABASE_URL")
SCHEMA = os.environ.get("PIKKU_SCHEMA")  # None: each service's default schema
server = None
if not DSN:
    from pikku_pg._embedded import EmbeddedPostgres

    server = EmbeddedPostgres()
    DSN = server.start()

ai = PgAIStorageService(DSN, SCHEMA)
ai.init()  # creates or upgrades the tables; a no-op when they are up to date

# %% A conversation: a thread, a user turn, an assistant turn with a tool call.
thread = ai.create_thread("user:ada", title="Weather")
ai.save_messages(
    thread.id,
    [
        {"role": "user", "content": "Will it rain in Oslo tomorrow?"},
        {
            "role": "assistant",
            "toolCalls": [
                {"id": f"call-{thread.id}", "name": "forecast", "args": {"city": "Oslo"}}
            ],
        },
        {
            "role": "tool",
            "toolResults": [{"id": f"call-{thread.id}", "name": "forecast", "result": "rain, 9°C"}],
        },
        {"role": "assistant", "content": "Yes: rain and 9°C. Take an umbrella."},
    ],
)
for message in ai.get_messages(thread.id):
    calls = [f"{c.name}({c.args})" for c in message.tool_calls or []]
    results = [f"{r.name} -> {r.result}" for r in message.tool_results or []]
    print(f"{message.role:>9}: {message.content or ', '.join(calls + results)}")

# %% Working memory: per thread or per resource, patched atomically.
ai.save_working_memory("user:ada", "resource", {"city": "Oslo"})
memory = ai.update_working_memory("user:ada", "resource", {"units": "metric"})
print("memory:", memory)

# %% A durable workflow, run inline: each step runs once and its result is stored.
wf = PgWorkflowService(DSN, SCHEMA)
wf.init()


@wf.workflow("daily-report")
def daily_report(ctx: WorkflowContext, data: dict[str, str]) -> dict[str, int]:
    rows = ctx.do("count messages", lambda d: len(ai.get_messages(d["thread"])), data)
    ctx.sleep("cool down", "10ms")  # durable: a replay after a crash does not sleep again
    return {"messages": rows}


print("report:", wf.run_to_completion("daily-report", {"thread": thread.id}))

# %% What a console shows: the runs and each step attempt.
with PgWorkflowRunService(DSN, SCHEMA) as runs:
    for run in runs.list_runs(workflow_name="daily-report", limit=1):
        print(f"run {run.id}: {run.status}, output {run.output}")
        for attempt in runs.get_run_history(run.id):
            print(f"  {attempt.step_name}: {attempt.status} (attempt {attempt.attempt_count})")

# %% Clean up: close the services (and stop the embedded server, if we started one).
wf.close()
ai.close()
if server is not None:
    server.stop()
