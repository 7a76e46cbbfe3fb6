/**
 * Replaying a stored request to its tunnel's origin, as it was or edited
 * (method, path, headers, body). The replay goes through the same answer path
 * as a visitor's request, so it is captured like one: a new entry, marked as
 * a replay of the original.
 *
 * @example
 * ```ts
 * import type { Entry } from "./store.ts";
 * import type { Tunnel } from "../tunnels.ts";
 * import { AgentEvents } from "../events.ts";
 * declare const entry: Entry, tunnel: Tunnel;
 * const id = await replay(entry, tunnel, { body: "{\"edited\":true}" }, { events: new AgentEvents(), originTimeoutMs: 60_000 });
 * ```
 * @module
 */
import { FrameReader, writeBodyEnd, writeBodyPiece } from "../../wire/codec.ts";
import type { FrameOf } from "../../wire/protocol.ts";
import type { HeaderPairs } from "../../shared/headers.ts";
import { answerRequest } from "../answer_http.ts";
import { ControlError } from "../control.ts";
import type { AgentEvents } from "../events.ts";
import { Exchange } from "../exchange.ts";
import type { Tunnel } from "../tunnels.ts";
import type { Entry } from "./store.ts";

/** What an edited replay changes; anything left out is as it was. */
export interface ReplayChanges {
  method?: string;
  /** The request target: path and query. */
  path?: string;
  headers?: HeaderPairs;
  /** A new body, as text or as base64 bytes. */
  body?: string;
  bodyBase64?: string;
}

/** Headers the replay sets itself from the body it sends. */
const FRAMING = new Set(["content-length", "transfer-encoding"]);

/** Replays `entry` (with `changes`) to `tunnel`'s origin; resolves with the new entry's id once answered. */
export async function replay(
  entry: Entry,
  tunnel: Tunnel,
  changes: ReplayChanges,
  context: { events: AgentEvents; originTimeoutMs: number },
): Promise<string> {
  if (!tunnel.pool) throw new ControlError("bad_request", `tunnel "${tunnel.name}" is not an http tunnel`);
  if (entry.websocket) throw new ControlError("bad_request", "a WebSocket cannot be replayed");
  const body = replayBody(entry, changes);
  const headers = (changes.headers ?? entry.requestHeaders).filter(([name]) =>
    !FRAMING.has(name.toLowerCase())
  );
  if (body.length > 0) headers.push(["content-length", String(body.length)]);
  const head: FrameOf<"request"> = {
    type: "request",
    tunnel: entry.tunnel,
    method: (changes.method ?? entry.method).toUpperCase(),
    target: changes.path ?? entry.target,
    headers,
    remoteAddr: "replay",
  };
  const exchange = new Exchange(context.events, head, entry.id);
  const options = {
    origin: tunnel.spec.origin,
    originTimeoutMs: context.originTimeoutMs,
    agent: tunnel.pool,
  };
  await answerRequest(head, bodyReader(body), discard(), options, exchange);
  return exchange.id;
}

function replayBody(entry: Entry, changes: ReplayChanges): Uint8Array {
  if (changes.bodyBase64 !== undefined) return Uint8Array.fromBase64(changes.bodyBase64);
  if (changes.body !== undefined) return new TextEncoder().encode(changes.body);
  if (entry.requestBody.truncated) {
    throw new ControlError(
      "bad_request",
      `only ${entry.requestBody.bytes().length} of the body's ${entry.requestBody.size} bytes were kept; send a body to replay it`,
    );
  }
  return entry.requestBody.bytes();
}

/** A reader over `body` framed as the relay would send it. */
function bodyReader(body: Uint8Array): FrameReader {
  const pipe = new TransformStream<Uint8Array, Uint8Array>();
  const writer = pipe.writable.getWriter();
  (async () => {
    await writeBodyPiece(writer, body);
    await writeBodyEnd(writer);
    await writer.close();
  })().catch(() => {
    // The origin refused before reading it all: the answer says so.
  });
  return new FrameReader(pipe.readable);
}

/** Where the origin's answer goes: nowhere; the entry captures it. */
function discard(): WritableStreamDefaultWriter<Uint8Array> {
  return new WritableStream<Uint8Array>().getWriter();
}
