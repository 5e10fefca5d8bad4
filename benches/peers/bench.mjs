// @discordjs/ws against `shardwire sim`: one measurement, printed as one
// JSON object on stdout, as `shardwire-bench` does. `cargo xtask bench
// --peers` runs it beside shardwire-bench and tabulates the runs.
//
//   node bench.mjs flood --api URL --shards N --events M
//   node --expose-gc bench.mjs idle --api URL --shards K
//
// URL is the sim's REST base as it prints it (`http://…/api/v10`): the
// manager fetches /gateway/bot there and connects where that points, with
// zlib-stream inflated by zlib-sync, every shard identifying at once.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

import { REST } from '@discordjs/rest';
import { CompressionMethod, WebSocketManager, WebSocketShardEvents } from '@discordjs/ws';

// READY and two GUILD_CREATEs come before the flood (as in shardwire-bench).
const BEFORE_FLOOD = 3;
// No measurement waits forever: a stuck run fails.
const DEADLINE_MS = 300_000;
// GUILDS, as the Rust clients ask for.
const INTENTS = 1;

const require = createRequire(import.meta.url);

/** A package's version, read from its installed package.json. */
function versionOf(name) {
  // Not through `require.resolve`: a package's `exports` may hide its
  // package.json.
  const path = new URL(`node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(path, 'utf8')).version;
}

/** Seconds of this process's CPU, user and system, all threads. */
function cpuSeconds() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

/** The CPUs this process may run on (`cargo xtask bench` pins it to one). */
function cpusAllowed() {
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    return status.match(/^Cpus_allowed_list:\s*(.*)$/m)?.[1] ?? null;
  } catch {
    return null;
  }
}

/** The union of [from, to] intervals (ms), in seconds: time a flood ran. */
function busySeconds(floods) {
  const sorted = [...floods].sort((a, b) => a[0] - b[0]);
  let total = 0;
  let current = null;
  for (const [from, to] of sorted) {
    if (current && from <= current[1]) {
      current[1] = Math.max(current[1], to);
    } else {
      if (current) total += current[1] - current[0];
      current = [from, to];
    }
  }
  if (current) total += current[1] - current[0];
  return total / 1e3;
}

function manager(api, token, shards) {
  // The sim prints `…/api/v10`; @discordjs/rest adds the version itself.
  const base = api.replace(/\/v\d+\/?$/, '');
  const rest = new REST({ api: base, version: '10' }).setToken(token);
  return new WebSocketManager({
    token,
    intents: INTENTS,
    rest,
    shardCount: shards,
    compression: CompressionMethod.ZlibSync,
    // The counterpart of shardwire's `Unqueued`: the sim lets all identify.
    buildIdentifyThrottler: () => ({ waitForIdentify: async () => {} }),
  });
}

/**
 * Resolves when every shard has seen `until` dispatches; `each` sees every
 * dispatch first. Rejects on a shard's error or close.
 */
function dispatchesUntil(ws, shards, until, each) {
  return new Promise((resolve, reject) => {
    const seen = new Array(shards).fill(0);
    let done = 0;
    ws.on(WebSocketShardEvents.Dispatch, (payload, shardId) => {
      seen[shardId] += 1;
      each(payload, shardId, seen[shardId]);
      if (seen[shardId] === until && ++done === shards) resolve(seen);
    });
    ws.on(WebSocketShardEvents.Error, (error, shardId) =>
      reject(new Error(`shard ${shardId}: ${error?.message ?? error}`)),
    );
    ws.on(WebSocketShardEvents.Closed, (code, shardId) =>
      reject(new Error(`shard ${shardId} closed with ${code}`)),
    );
    ws.connect().catch(reject);
  });
}

/** N shards consume a flood of M events each. */
async function flood({ api, token, shards, events }) {
  const cpu = cpuSeconds();
  const wall = performance.now();
  const ws = manager(api, token, shards);
  const floods = new Array(shards);
  let bytes = 0;
  const seen = await dispatchesUntil(ws, shards, BEFORE_FLOOD + events, (payload, shardId, n) => {
    // Touch what a bot routes on, so nothing is optimised away.
    bytes += payload.t.length;
    const now = performance.now();
    if (n === BEFORE_FLOOD + 1) floods[shardId] = [now, now];
    else if (n > BEFORE_FLOOD) floods[shardId][1] = now;
  });
  const cpuS = cpuSeconds() - cpu;
  const wallS = (performance.now() - wall) / 1e3;
  const report = {
    client: 'discordjs-ws',
    shards,
    events: seen.reduce((a, b) => a + b, 0),
    event_name_bytes: bytes,
    flood_events: shards * events,
    flood_s: busySeconds(floods.filter(Boolean)),
    wall_s: wallS,
    cpu_s: cpuS,
    peak_rss_kib: process.resourceUsage().maxRSS,
  };
  await ws.destroy({ reason: 'done' });
  return report;
}

/** K shards connect and sit idle; the process's RSS. */
async function idle({ api, token, shards }) {
  const kib = () => process.memoryUsage().rss / 1024;
  const baseline = kib();
  const started = performance.now();
  const ws = manager(api, token, shards);
  await dispatchesUntil(ws, shards, BEFORE_FLOOD, () => {});
  const readyS = (performance.now() - started) / 1e3;
  // Let buffers settle, as shardwire-bench's idle run does, then read.
  await sleep(2_000);
  const rss = kib();
  if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc');
  globalThis.gc();
  const afterGc = kib();
  await ws.destroy({ reason: 'done' });
  return {
    client: 'discordjs-ws',
    shards,
    ready_s: readyS,
    baseline_rss_kib: baseline,
    rss_kib: rss,
    gc_rss_kib: afterGc,
  };
}

function options(argv) {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      api: { type: 'string' },
      shards: { type: 'string' },
      events: { type: 'string', default: '0' },
      token: { type: 'string', default: 'sim-token' },
    },
  });
  const whole = (name) => {
    const n = Number(values[name]);
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${name}: not a whole number`);
    return n;
  };
  if (!values.api) throw new Error('--api is required');
  const shards = whole('shards');
  if (shards < 1) throw new Error('--shards must be at least 1');
  return {
    command: positionals[0],
    api: values.api,
    token: values.token,
    shards,
    events: whole('events'),
  };
}

async function main() {
  const opts = options(process.argv.slice(2));
  // @discordjs/ws falls back to no compression, with a warning, when
  // zlib-sync is missing: refuse to measure that instead.
  require('zlib-sync');
  const measure = { flood, idle }[opts.command];
  if (!measure) throw new Error('usage: bench.mjs flood|idle --api URL --shards N [--events M]');
  const report = await measure(opts);
  report.cpus_allowed = cpusAllowed();
  report.versions = {
    node: process.versions.node,
    '@discordjs/ws': versionOf('@discordjs/ws'),
    'zlib-sync': versionOf('zlib-sync'),
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

const deadline = setTimeout(() => {
  console.error(`the measurement took over ${DEADLINE_MS / 1e3} s`);
  process.exit(1);
}, DEADLINE_MS);

main().then(
  () => {
    clearTimeout(deadline);
    // Heartbeat timers and sockets may linger after destroy: end here.
    process.exit(0);
  },
  (error) => {
    console.error(`bench.mjs: ${error?.stack ?? error}`);
    process.exit(1);
  },
);
