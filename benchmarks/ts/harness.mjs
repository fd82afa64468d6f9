// What ai.mjs and channel.mjs share (the node side of ../_harness.py): the connection, the
// timing loop and the command line.
//
//     node <script>.mjs SECONDS [OPERATION]
//
// The connection comes from PGHOST (a host or a socket directory), PGPORT, PGUSER, PGDATABASE
// and PGPASSWORD, which postgres.js reads and ../_harness.py sets from the benchmark's conninfo.
// The script prepares its data in a schema of its own, created by the TypeScript services'
// init() (so they run on their own tables and indexes, not on the Python port's), dropped before
// and after. It prints one JSON line: {"<operation>": [ops/s x1, ops/s x16], ...} for the given
// operation, or for all of them.
import postgres from 'postgres'

/** Calls in flight for the concurrent figure, as IN_FLIGHT in ../_harness.py. */
export const IN_FLIGHT = 16

/** A postgres.js client with up to IN_FLIGHT connections (like the x16 pool of the Python side). */
export function connect() {
  return postgres({ max: IN_FLIGHT, onnotice: () => {} })
}

/**
 * Calls per second of `op(lane)`, with `lanes` loops calling it back to back for `seconds`.
 *
 * As run_async in ../_harness.py: each lane calls once first (all together) to open connections
 * and prepare statements; a lane starts a call as long as the time is not up; the count of calls
 * is divided by the time until the last lane is done.
 */
export async function opsPerSecond(op, lanes, seconds) {
  const ids = Array.from({ length: lanes }, (_, lane) => lane)
  await Promise.all(ids.map((lane) => op(lane)))
  const began = performance.now()
  const stopAt = began + seconds * 1000
  const counts = await Promise.all(
    ids.map(async (lane) => {
      let calls = 0
      while (performance.now() < stopAt) {
        await op(lane)
        calls++
      }
      return calls
    }),
  )
  const calls = counts.reduce((a, b) => a + b, 0)
  return calls / ((performance.now() - began) / 1000)
}

/**
 * Run a benchmark from the command line.
 *
 * - `schema`: the schema the benchmark works in (dropped before and after).
 * - `prepare(sql)`: creates the tables and the data; what it returns is passed to `operations`.
 * - `operations(sql, data)`: {name: op} on services using `sql`, where op(lane) makes one call.
 * - `beforeFigure(sql, name)` (optional): run before each figure of operation `name`.
 *
 * Each figure opens its own client, as each Python figure opens its own services.
 */
export async function run({ schema, prepare, operations, beforeFigure = async () => {} }) {
  const [secondsArg, only] = process.argv.slice(2)
  const seconds = Number(secondsArg)
  const admin = connect()
  const names = Object.keys(operations(admin)) // making services sends nothing
  if (!(seconds > 0) || (only !== undefined && !names.includes(only))) {
    console.error(`usage: node ${process.argv[1]} SECONDS [OPERATION]`)
    console.error(`operations: ${names.join(' | ')}`)
    process.exit(2)
  }
  const drop = `DROP SCHEMA IF EXISTS ${schema} CASCADE`
  try {
    await admin.unsafe(drop)
    const data = await prepare(admin)
    const result = {}
    for (const name of names.filter((name) => only === undefined || name === only)) {
      result[name] = []
      for (const lanes of [1, IN_FLIGHT]) {
        const sql = connect()
        try {
          await beforeFigure(sql, name)
          const op = operations(sql, data)[name]
          result[name].push(await opsPerSecond(op, lanes, seconds))
        } finally {
          await sql.end()
        }
      }
    }
    console.log(JSON.stringify(result))
  } finally {
    await admin.unsafe(drop)
    await admin.end()
  }
}
