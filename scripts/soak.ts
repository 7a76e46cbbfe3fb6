/**
 * `deno task soak`: rounds of 100,000 requests through one tunnel, printing
 * the relay's and the client's RSS after each, to show memory stays flat; and
 * a flood on one tunnel while another tunnel's latency is sampled, against
 * the same tunnel idle; then, with the relay under `ulimit -n 1024`, a flood
 * of 1,100 idle connections on its public port and 1,100 on its info port,
 * after which it must still be alive and serving.
 *
 * Flags: `--rounds N` (3), `--requests N` per round (100,000), `--relay-arg F`
 * (repeatable, passed to the relay). Needs wrk.
 * @module
 */
import { Command } from "commander";
import { Child, memoryMB, Processes, startClient, startRelay } from "../tests/helpers/processes.ts";
import { wrk } from "./bench/wrk.ts";

const flags = new Command("soak")
  .option("--rounds <n>", "rounds of requests", Number, 3)
  .option("--requests <n>", "requests per round", Number, 100_000)
  .option("--relay-arg <arg>", "extra relay flag, e.g. --relay-arg=--rate-per-tunnel=500 (repeatable)", (
    value: string,
    previous: string[],
  ) => [...previous, value], [])
  .parse(Deno.args, { from: "user" })
  .opts<{ rounds: number; requests: number; relayArg: string[] }>();

await using processes = new Processes();
const origin = processes.add(Child.script("origin", "scripts/bench/origin.ts", []));
const port = (await origin.waitFor(/^ready port=(\d+)/))[1];
// Tenants do not share origins: the quiet tunnel gets its own, so only the relay is shared.
const quietOrigin = processes.add(Child.script("quiet-origin", "scripts/bench/origin.ts", []));
const quietPort = (await quietOrigin.waitFor(/^ready port=(\d+)/))[1];
const relay = await startRelay(processes, {
  args: ["--log-level=warning", "--heartbeat=5", "--max-conns-per-ip=100000", ...flags.relayArg],
  fileLimit: 1024,
});
const soaked = await startClient(processes, relay, [port, "soak", "--log-level=warning"]);
const quiet = await startClient(processes, relay, [quietPort, "quiet", "--log-level=warning"], {
  label: "quiet",
});
const url = `http://127.0.0.1:${relay.httpPort}/`;
const pids = { relay: relay.child.pid, client: soaked.child.pid };

console.log(`before: relay ${memoryMB(pids.relay).now} MB, client ${memoryMB(pids.client).now} MB`);
for (let round = 1; round <= flags.rounds; round++) {
  let done = 0;
  while (done < flags.requests) {
    // wrk runs by time; a short probe sets the pace, then the round runs long enough for the rest.
    const seconds = Math.max(1, Math.min(60, Math.ceil((flags.requests - done) / 3000)));
    const result = await wrk(url, {
      connections: 32,
      threads: 2,
      seconds,
      host: new URL(soaked.urls[0]).host,
    });
    done += Math.round(result.requestsPerSecond * seconds);
  }
  console.log(
    `after round ${round} (${done} requests): relay ${memoryMB(pids.relay).now} MB, client ${
      memoryMB(pids.client).now
    } MB`,
  );
}

const quietHost = new URL(quiet.urls[0]).host;
const idle = await wrk(url, { connections: 1, threads: 1, seconds: 5, host: quietHost });
const flood = wrk(url, { connections: 64, threads: 1, seconds: 7, host: new URL(soaked.urls[0]).host });
await new Promise((resolve) => setTimeout(resolve, 1000));
const during = await wrk(url, { connections: 1, threads: 1, seconds: 5, host: quietHost });
await flood;
console.log(
  `quiet tunnel p50/p99: idle ${idle.p50Ms.toFixed(2)}/${idle.p99Ms.toFixed(2)} ms, ` +
    `during a flood on another tunnel ${during.p50Ms.toFixed(2)}/${during.p99Ms.toFixed(2)} ms ` +
    `(${(during.p50Ms / idle.p50Ms).toFixed(1)}x at p50)`,
);

/** Holds `count` idle connections to `port` (from a process with room for them) until the result is read. */
async function connectionFlood(port: number, count: number) {
  const child = processes.add(
    Child.script("flood", "tests/fixtures/conn_flood.ts", [String(port), String(count)], {}, {
      fileLimit: count + 256,
    }),
  );
  const [line] = await child.waitFor(/^held \d+ closed \d+/, { timeoutMs: 60_000 });
  return { child, line };
}

const floods = [await connectionFlood(relay.httpPort, 1_100), await connectionFlood(relay.quicPort, 1_100)];
const floodedProbe = await wrk(url, { connections: 1, threads: 1, seconds: 2, host: quietHost });
for (const flood of floods) await flood.child.stop();
await new Promise((resolve) => setTimeout(resolve, 1_000));
const afterFlood = await wrk(url, { connections: 1, threads: 1, seconds: 2, host: quietHost });
const relayAlive = await Promise.race([relay.child.status.then(() => false), Promise.resolve(true)]);
console.log(
  `connection flood under ulimit -n 1024: public port ${floods[0].line}, info port ${floods[1].line}; ` +
    `during it ${floodedProbe.requestsPerSecond.toFixed(0)} req/s got through, after it ` +
    `${afterFlood.requestsPerSecond.toFixed(0)} req/s (p50 ${afterFlood.p50Ms.toFixed(2)} ms); relay ` +
    (relayAlive ? "alive" : "DEAD"),
);
Deno.exitCode = relayAlive && afterFlood.requestsPerSecond > 0 ? 0 : 1;
