/**
 * What the resumable layer (`lib/transport/resumable.ts`) costs, with nothing
 * else in the way: the in-process transport alone, then with the layer on
 * both ends. Bulk: one stream carrying `--mib` MiB; exchanges: `--exchanges`
 * streams each carrying a small request and answer, one after another.
 * Rounds alternate (A/B/A/B) so a busy machine hits both alike.
 *
 * @example
 * ```sh
 * deno run -A scripts/bench/resumable.ts --mib 256 --exchanges 2000 --rounds 2
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { memoryPair } from "../../lib/transport/memory.ts";
import { ResumableConnection } from "../../lib/transport/resumable.ts";
import type { TunnelConnection } from "../../lib/transport/types.ts";

const { values } = parseArgs({
  options: {
    mib: { type: "string", default: "256" },
    exchanges: { type: "string", default: "2000" },
    rounds: { type: "string", default: "2" },
  },
});
const CHUNK = new Uint8Array(64 * 1024).fill(7);
const SMALL = new Uint8Array(200).fill(1);

function ends(resumable: boolean): [TunnelConnection, TunnelConnection] {
  const [agent, relay] = memoryPair();
  if (!resumable) return [agent, relay];
  return [new ResumableConnection(agent, "agent", 60_000), new ResumableConnection(relay, "relay", 60_000)];
}

async function drain(readable: ReadableStream<Uint8Array>): Promise<number> {
  let bytes = 0;
  for await (const part of readable) bytes += part.length;
  return bytes;
}

/** MB/s of `mib` MiB down one stream. */
async function bulk(resumable: boolean, mib: number): Promise<number> {
  const [agent, relay] = ends(resumable);
  const started = performance.now();
  const stream = (await relay.openStream())!;
  const incoming = agent.incomingStreams.getReader().read();
  const writing = (async () => {
    const writer = stream.writable.getWriter();
    for (let i = 0; i < mib * 16; i++) await writer.write(CHUNK.slice());
    await writer.close();
  })();
  const [bytes] = await Promise.all([drain((await incoming).value!.readable), writing]);
  const seconds = (performance.now() - started) / 1000;
  relay.close({ code: 0, reason: "done" });
  return bytes / 1e6 / seconds;
}

/** Exchanges per second: a stream each, a small request and answer. */
async function exchanges(resumable: boolean, count: number): Promise<number> {
  const [agent, relay] = ends(resumable);
  const answering = (async () => {
    for await (const stream of agent.incomingStreams) {
      await drain(stream.readable);
      const writer = stream.writable.getWriter();
      await writer.write(SMALL.slice());
      await writer.close();
    }
  })();
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    const stream = (await relay.openStream())!;
    const writer = stream.writable.getWriter();
    await writer.write(SMALL.slice());
    await writer.close();
    await drain(stream.readable);
  }
  const perSecond = count / ((performance.now() - started) / 1000);
  relay.close({ code: 0, reason: "done" });
  await answering;
  return perSecond;
}

for (let round = 1; round <= Number(values.rounds); round++) {
  for (const resumable of [false, true]) {
    const label = resumable ? "resumable" : "plain    ";
    const mbps = await bulk(resumable, Number(values.mib));
    const rate = await exchanges(resumable, Number(values.exchanges));
    console.log(`round ${round} ${label} bulk ${mbps.toFixed(0)} MB/s  exchanges ${rate.toFixed(0)}/s`);
  }
}
