// TypeScript @pikku/pg 0.12.1 on the lines of ../bench_ai.py: same operation names, same data.
//
//     node ai.mjs SECONDS [OPERATION]      (see harness.mjs; run by bench_ai.py --ts)
//
// Only the ops/s lines: the round trips and the big-thread latency are measured on the Python
// side only, so the big thread is not created here.
import { randomUUID } from 'node:crypto'
import { PgAIStorageService } from '@pikku/pg'
import { IN_FLIGHT, run } from './harness.mjs'

const SCHEMA = 'bench_ai_ts'

/** A uuid4 as 32 hex digits, as uuid.uuid4().hex. */
const hex = () => randomUUID().replaceAll('-', '')

/** 10 messages: an assistant message with 2 tool calls and a tool message with results. */
function batch() {
  const n = hex()
  const messages = [
    { id: `${n}-u0`, role: 'user', content: 'What is the weather in Paris and Rome?' },
    {
      id: `${n}-a0`,
      role: 'assistant',
      content: 'Let me check.',
      toolCalls: [
        { id: `${n}-tc1`, name: 'weather', args: { city: 'Paris' } },
        { id: `${n}-tc2`, name: 'weather', args: { city: 'Rome' } },
      ],
    },
    {
      id: `tool-results-${n}-a0`,
      role: 'tool',
      toolResults: [
        { id: `${n}-tc1`, name: 'weather', result: 'sunny, 21°C' },
        { id: `${n}-tc2`, name: 'weather', result: 'cloudy, 18°C' },
      ],
    },
  ]
  for (let i = 0; i < 7; i++) {
    const role = i % 2 ? 'assistant' : 'user'
    messages.push({ id: `${n}-m${i}`, role, content: `message ${i} `.repeat(8) })
  }
  return messages
}

function runInput(threadId) {
  const now = new Date()
  return {
    agentName: 'bench-agent',
    threadId,
    resourceId: 'bench',
    status: 'running',
    usage: { inputTokens: 0, outputTokens: 0, model: 'm' },
    // The TypeScript createRun inserts these as they are (the Python one defaults them).
    createdAt: now,
    updatedAt: now,
  }
}

const RUN_UPDATE = {
  status: 'completed',
  usage: { inputTokens: 120, outputTokens: 80, model: 'm' },
}

/** A 500-message thread, a 1,000-run thread; returns the lane threads. */
async function prepare(sql) {
  const store = new PgAIStorageService(sql, SCHEMA)
  await store.init()
  for (const name of ['t500', 'truns']) {
    await store.createThread('bench', { threadId: name })
  }
  for (let start = 0; start < 500; start += 50) {
    const messages = Array.from({ length: 50 }, (_, i) => ({
      id: `t500-${start + i}`,
      role: 'user',
      content: `message ${start + i}`,
    }))
    await store.saveMessages('t500', messages)
  }
  // One thread per in-flight lane, so concurrent saves do not queue on one row lock.
  const lanes = Array.from({ length: IN_FLIGHT }, () => `lane-${hex().slice(0, 8)}`)
  for (const id of lanes) {
    await store.createThread('bench', { threadId: id })
  }
  await sql.unsafe(`INSERT INTO ${SCHEMA}.ai_run (agent_name, thread_id, resource_id, created_at)
    SELECT 'agent-' || (g % 5), 'truns', 'bench', now() - make_interval(secs => g)
    FROM generate_series(1, 1000) g`)
  await sql.unsafe(`ANALYZE ${SCHEMA}.ai_message, ${SCHEMA}.ai_run`)
  return lanes
}

/** The operations of ../bench_ai.py on a store using `sql`; lane i works on thread lanes[i]. */
function operations(sql, lanes) {
  const store = new PgAIStorageService(sql, SCHEMA)
  return {
    create_thread: () => store.createThread('bench'),
    'save_messages (10 msgs)': (lane) => store.saveMessages(lanes[lane], batch()),
    'get_messages last_n=50': () => store.getMessages('t500', { lastN: 50 }),
    'create_run + update_run': async (lane) => {
      const runId = await store.createRun(runInput(lanes[lane]))
      await store.updateRun(runId, RUN_UPDATE)
    },
    'get_runs_by_thread (1,000 runs)': () => store.getRunsByThread('truns'),
  }
}

await run({ schema: SCHEMA, prepare, operations })
