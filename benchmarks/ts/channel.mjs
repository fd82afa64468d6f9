// TypeScript @pikku/pg 0.12.1 on the ops/s lines of ../bench_channel.py: same operation names,
// same data.
//
//     node channel.mjs SECONDS [OPERATION]      (see harness.mjs; run by bench_channel.py --ts)
//
// The event hub table has no TypeScript counterpart here (the Python event hub service is the
// port's own listener), so it is measured on the Python side only.
import { randomUUID } from 'node:crypto'
import { PgChannelStore, PgDeploymentService, PgEventHubStore } from '@pikku/pg'
import { IN_FLIGHT, run } from './harness.mjs'

const SCHEMA = 'bench_channel_ts'
const DEPLOYMENTS = 200
const ADD_REMOVE = 'add_channel + remove_channels'
const FIND = 'find_function (200 deployments)'

/** 16 lane channels, 200 live deployments of 20 functions each. */
async function prepare(sql) {
  const store = new PgChannelStore(sql, SCHEMA)
  await store.init()
  for (let lane = 0; lane < IN_FLIGHT; lane++) {
    await store.addChannel({ channelId: `lane-${lane}`, channelName: 'bench' })
  }
  await new PgDeploymentService({}, sql, SCHEMA).init()
  // Deployment d serves f{d * 7 % 40}..f{d * 7 % 40 + 19}: "f0" is served by 5 of them.
  await sql.unsafe(`INSERT INTO ${SCHEMA}.pikku_deployments (deployment_id, endpoint, functions)
    SELECT 'dep-' || d, 'http://dep-' || d,
           ARRAY(SELECT 'f' || (d * 7 % 40 + k) FROM generate_series(0, 19) k)
    FROM generate_series(1, ${DEPLOYMENTS}) d`)
  await sql.unsafe(`ANALYZE ${SCHEMA}.pikku_deployments`)
}

/** Make the 200 deployments live again (their TTL is 30 s), VACUUM, and check that 5 serve "f0". */
async function refreshHeartbeats(sql) {
  await sql.unsafe(`UPDATE ${SCHEMA}.pikku_deployments SET last_heartbeat = now()`)
  await sql.unsafe(`VACUUM ${SCHEMA}.pikku_deployments`) // as ../bench_channel.py does
  const found = await new PgDeploymentService({}, sql, SCHEMA).findFunction('f0')
  if (found.length !== 5) {
    throw new Error(`the benchmark data is not as expected: ${found.length} deployments serve f0`)
  }
}

let topics = 0

/** The operations of ../bench_channel.py on services using `sql`. */
function operations(sql) {
  const store = new PgChannelStore(sql, SCHEMA)
  const hub = new PgEventHubStore(sql, SCHEMA)
  const registry = new PgDeploymentService({}, sql, SCHEMA)
  return {
    [ADD_REMOVE]: async (lane) => {
      const channelId = randomUUID().replaceAll('-', '')
      await store.addChannel({ channelId, channelName: 'bench', openingData: { lane } })
      await store.removeChannels([channelId])
    },
    subscribe: (lane) => hub.subscribe(`topic-${topics++}`, `lane-${lane}`),
    [FIND]: () => registry.findFunction('f0'),
  }
}

await run({
  schema: SCHEMA,
  prepare,
  operations,
  beforeFigure: async (sql, name) => {
    if (name === FIND) await refreshHeartbeats(sql)
  },
})
