/**
 * `deno task fuzz`: a campaign of random and mutated frames against a live
 * relay (a real `server.ts` process).
 *
 * Phase 1, hellos: many short QUIC connections each send one fuzzed first
 * frame on the control stream; the relay must answer `error` (or `welcome`,
 * when a mutation happens to stay valid) or close, never hang or die.
 * Phase 2, answers: a fuzz client registers a tunnel, wrk sends requests
 * through the relay, and the fuzz client answers each request stream with a
 * fuzzed response (random bytes, mutated frames or bodies, truncated ones,
 * valid ones, hostile heads that play with framing: odd statuses, several or
 * malformed Content-Length, Transfer-Encoding, control bytes, oversized
 * heads; or a stream aborted before any answer); the relay must answer every visitor with a status
 * or a broken response, and keep serving. At the end the relay must be alive with 0
 * requests in flight (no leaked streams).
 *
 * Flags: `--frames N` (1,000,000 in all), `--hellos N` (5,000 of them in
 * phase 1), `--minutes N` (time bound, 20), `--seed N`.
 * @module
 */
import { Command } from "commander";
import fc from "fast-check";
import { encodeFrame, FrameReader } from "../lib/wire/codec.ts";
import { type Frame, PROTOCOL_VERSION } from "../lib/wire/protocol.ts";
import { Processes, startRelay } from "../tests/helpers/processes.ts";
import { rawQuic, rawTunnel } from "../tests/helpers/raw_quic.ts";
import { visit } from "../tests/helpers/visit.ts";

const flags = new Command("fuzz")
  .option("--frames <n>", "frames to send in all", Number, 1_000_000)
  .option("--hellos <n>", "of which first frames on fresh connections", Number, 5_000)
  .option("--minutes <n>", "stop after this long in any case", Number, 20)
  .option("--seed <n>", "random seed", Number, Date.now() % 1_000_000)
  .parse(Deno.args, { from: "user" })
  .opts<{ frames: number; hellos: number; minutes: number; seed: number }>();

const deadline = Date.now() + flags.minutes * 60_000;
console.log(`fuzz: seed ${flags.seed}, ${flags.frames} frames, ${flags.hellos} of them hellos`);

const validFrames: Frame[] = [
  {
    type: "hello",
    version: PROTOCOL_VERSION,
    clientId: "f".repeat(32),
    tunnels: [{ kind: "http", name: "fuzzed" }],
  },
  { type: "response", status: 200, headers: [["content-type", "text/plain"], ["set-cookie", "a=1"]] },
  { type: "error", code: "origin_refused", message: "no" },
  { type: "ping", seq: 1 },
  { type: "ws-data", binary: true, final: true, data: new Uint8Array([1, 2, 3]) },
];

const okHead = encodeFrame({ type: "response", status: 200, headers: [["content-type", "text/plain"]] });
const hello = new TextEncoder().encode("hello");
/** Byte sequences to fuzz: each valid frame, and whole answers with a body (see codec.ts for the pieces). */
const encoded = [
  ...validFrames.map(encodeFrame),
  // A body of one 5-byte piece, then the end marker.
  new Uint8Array([...okHead, 0, 0, 0, 5, ...hello, 0, 0, 0, 0]),
  // The same, cut short by the abort marker.
  new Uint8Array([...okHead, 0, 0, 0, 5, ...hello, 0xff, 0xff, 0xff, 0xff]),
];
/** A header value a hostile client might use to frame a response its own way. */
const framingValue = fc.oneof(
  fc.nat({ max: 100 }).map(String),
  fc.constantFrom(
    "chunked",
    "gzip, chunked",
    "abc",
    "5, 50",
    "5, 5",
    "-1",
    "1e3",
    " 7",
    "99999999999999999999",
  ),
  fc.string({ maxLength: 20 }),
  fc.uint8Array({ maxLength: 12 }).map((bytes) => String.fromCharCode(...bytes)),
);
/** A header name: framing ones, hop-by-hop ones, or anything, control bytes included. */
const headerName = fc.oneof(
  fc.constantFrom(
    "content-length",
    "Content-Length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
  ),
  fc.constantFrom("set-cookie", "content-type", "x-a"),
  fc.string({ minLength: 1, maxLength: 12 }),
);
/** A whole answer whose head plays with framing: odd statuses, lengths, encodings and sizes; then a body. */
const hostileAnswer: fc.Arbitrary<Uint8Array> = fc.record({
  status: fc.oneof(
    fc.constantFrom(100, 101, 103, 200, 204, 205, 304, 404, 599),
    fc.integer({ min: 100, max: 599 }),
  ),
  headers: fc.array(fc.tuple(headerName, framingValue), { maxLength: 8 }),
  big: fc.nat({ max: 40_000 }),
  body: fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 4 }),
}).map(({ status, headers, big, body }) => {
  const pairs: [string, string][] = big > 30_000 ? [...headers, ["x-big", "y".repeat(big)]] : headers;
  let head: Uint8Array;
  try {
    head = encodeFrame({ type: "response", status, headers: pairs });
  } catch {
    // Over the frame cap: a hostile client would send it anyway; the relay must refuse the frame.
    head = new Uint8Array([PROTOCOL_VERSION, 8, 0x00, 0x10, 0x00, 0x00]);
  }
  const pieces = body.flatMap((piece) => [0, 0, piece.length >> 8, piece.length & 0xff, ...piece]);
  return new Uint8Array([...head, ...pieces, 0, 0, 0, 0]);
});

/**
 * One fuzzed frame: random bytes, a mutated valid frame, a truncated one, or a valid one; or null for a
 * stream aborted before any answer (which Deno's QUIC sends as a plain end, not a reset).
 */
const fuzzedFrame: fc.Arbitrary<Uint8Array | null> = fc.oneof(
  { arbitrary: fc.uint8Array({ maxLength: 300 }), weight: 3 },
  { arbitrary: hostileAnswer, weight: 3 },
  {
    arbitrary: fc.tuple(
      fc.constantFrom(...encoded),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
    ).map(([frame, edits]) => {
      const mutated = frame.slice();
      for (const [at, value] of edits) mutated[at % mutated.length] = value;
      return mutated;
    }),
    weight: 4,
  },
  {
    arbitrary: fc.constantFrom(...encoded).chain((f) => fc.nat(f.length - 1).map((n) => f.subarray(0, n))),
    weight: 2,
  },
  { arbitrary: fc.constantFrom(...encoded), weight: 1 },
  { arbitrary: fc.constant(null), weight: 1 },
);

/** Fuzzed frames from the seed, drawn in batches so memory stays small. */
function* fuzzedFrames(seed: number): Generator<Uint8Array | null> {
  for (let batch = 0;; batch++) yield* fc.sample(fuzzedFrame, { seed: seed + batch, numRuns: 10_000 });
}

const frames = fuzzedFrames(flags.seed);
const nextFrame = () => frames.next().value!;
await using processes = new Processes();
// A 10 s heartbeat: the fuzz client is busy, and losing its tunnel would end phase 2 early.
const relay = await startRelay(processes, {
  args: ["--log-level=error", "--response-timeout=5", "--heartbeat=10"],
});
const quic = await rawQuic(processes, relay);
const connect = quic.connect;

// Phase 1: fuzzed first frames on fresh connections.
const helloOutcomes: Record<string, number> = {};
let sent = 0;
for (let i = 0; i < flags.hellos && Date.now() < deadline; i++) {
  const conn = await connect();
  // The relay may refuse, end the stream or hang up at any point of a fuzzed exchange: failed writes
  // and closes are expected here; what counts is what it answers (below) and that it stays up (at the end).
  const closed = conn.closed.catch(() => null);
  const stream = await conn.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  await writer.write(nextFrame() ?? new Uint8Array(0)).catch(() => {});
  await writer.close().catch(() => {});
  sent++;
  const answer = await Promise.race([
    new FrameReader(stream.readable).read().then((frame) => frame?.type ?? "closed", () => "reset"),
    new Promise<string>((resolve) => setTimeout(() => resolve("no answer in 12 s"), 12_000)),
  ]);
  helloOutcomes[answer] = (helloOutcomes[answer] ?? 0) + 1;
  conn.close({ closeCode: 0, reason: "fuzz" });
  await closed;
}
console.log(`fuzz: phase 1 sent ${sent} first frames:`, helloOutcomes);

// Phase 2: a registered tunnel whose every answer is fuzzed, under wrk load.
// A name and id the phase-1 corpus never uses, so no fuzzed hello can hold it.
const { conn, url, close } = await rawTunnel(quic, "fuzz-target");
const host = new URL(url).host;
let answered = 0;
const target = flags.frames - sent;
(async () => {
  for await (const stream of conn.incomingBidirectionalStreams) {
    const writer = stream.writable.getWriter();
    const bytes = nextFrame();
    answered++;
    (async () => {
      if (!bytes) return await writer.abort("fuzz reset");
      await writer.write(bytes);
      await writer.close();
    })().catch(() => {}); // As in phase 1: the relay may hang up on a fuzzed answer.
    stream.readable.cancel().catch(() => {}); // As above.
  }
})().catch(() => {}); // The loop ends with the connection, closed at the end.

const statuses: Record<string, number> = {};
let stalled = false;
while (answered < target && Date.now() < deadline && !stalled) {
  const before = answered;
  const seconds = Math.max(1, Math.min(30, Math.ceil((target - answered) / 3000)));
  const output = await new Deno.Command("wrk", {
    args: [
      "-t1",
      "-c16",
      `-d${seconds}s`,
      "--timeout",
      "10s",
      "-H",
      `Host: ${host}`,
      `http://127.0.0.1:${relay.httpPort}/`,
    ],
    stdout: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  const non2xx = Number(text.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0);
  const total = Number(text.match(/(\d+) requests in/)?.[1] ?? 0);
  statuses["2xx"] = (statuses["2xx"] ?? 0) + total - non2xx;
  statuses["other"] = (statuses["other"] ?? 0) + non2xx;
  console.log(`fuzz: phase 2 ${answered} fuzzed answers so far`);
  stalled = answered === before;
}

await new Promise((resolve) => setTimeout(resolve, 6_000));
const status = await visit(`http://localhost:${relay.httpPort}/.well-known/reverprox/status`)
  .then((response) => response.json(), () => ({ inFlight: NaN }));
const alive = await visit(`http://localhost:${relay.httpPort}/`).then((response) => response.ok, () => false);
if (!alive) {
  console.log(`fuzz: the relay is gone; its last words:\n${relay.child.lines.slice(-40).join("\n")}`);
}
await close();
quic.close();
const exited = await Promise.race([relay.child.status.then(() => true), Promise.resolve(false)]);
console.log(`fuzz: ${sent + answered} frames in all (${sent} first frames, ${answered} fuzzed answers)`);
console.log(`fuzz: visitors saw`, statuses, `; relay status after`, status);
const ok = alive && !exited && !stalled && status.inFlight === 0 && sent + answered >= flags.frames;
console.log(
  ok
    ? "fuzz: relay alive, 0 requests in flight: PASS"
    : `fuzz: FAIL (alive ${alive}, exited ${exited}, stalled ${stalled}, in flight ${status.inFlight}, ` +
      `frames ${sent + answered})`,
);
// exitCode, not exit(): `await using` must still stop the relay.
Deno.exitCode = ok ? 0 : 1;
