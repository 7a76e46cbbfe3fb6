/**
 * The agent's answer to each stream the relay opens: an HTTP request, a WebSocket or a TCP connection,
 * routed to its tunnel and answered from the tunnel's origin; what happens is told as events.
 *
 * @example
 * ```ts
 * import type { TunnelStream } from "../transport/types.ts";
 * declare const stream: TunnelStream;
 * declare const context: AnswerContext;
 * await answerStream(stream, context);
 * ```
 * @module
 */
import { encodeFrame, FrameReader } from "../wire/codec.ts";
import type { FrameOf } from "../wire/protocol.ts";
import type { TunnelStream } from "../transport/types.ts";
import { getLogger } from "../shared/log.ts";
import { answerRequest } from "./answer_http.ts";
import { answerWebSocket } from "./answer_websocket.ts";
import { answerTcp } from "./answer_tcp.ts";
import type { AgentEvents } from "./events.ts";
import { Exchange } from "./exchange.ts";
import type { Tunnel } from "./tunnels.ts";

const log = getLogger(["reverprox", "client"]);

/** What answering needs from the agent. */
export interface AnswerContext {
  events: AgentEvents;
  originTimeoutMs: number;
  /** The tunnel the relay routes on `route` (`http:<name>`, `tcp:<port>`). */
  find(route: string): Tunnel | undefined;
  /** Whether the tunnel's origin could be reached by a request. */
  originReached(tunnel: Tunnel, reached: boolean): void;
}

/** Answers one stream the relay opened: an HTTP request, a WebSocket, or a TCP connection. */
export async function answerStream(stream: TunnelStream, context: AnswerContext): Promise<void> {
  const reader = new FrameReader(stream.readable);
  const writer = stream.writable.getWriter();
  let head: FrameOf<"request" | "tcp-open">;
  try {
    head = await reader.expect("request", "tcp-open");
  } catch (error) {
    log.warn("bad stream from relay: {error}", { error: String(error) });
    return giveUp(reader, writer);
  }
  const tunnel = context.find(`${head.type === "request" ? "http" : "tcp"}:${head.tunnel}`);
  if (!tunnel) {
    // A TCP stream carries bodies, not frames: it just ends.
    const answer = {
      type: "error",
      code: "unknown_tunnel",
      message: `no tunnel "${head.tunnel}" here`,
    } as const;
    return giveUp(reader, writer, head.type === "request" ? answer : undefined);
  }
  if (head.type === "tcp-open") {
    const connection = { tunnel: tunnel.name, kind: "tcp" } as const;
    context.events.emit("connection", { ...connection, open: true });
    try {
      const reached = await answerTcp(head, reader, writer, tunnel.spec.origin, tunnel.channels);
      return context.originReached(tunnel, reached);
    } finally {
      context.events.emit("connection", { ...connection, open: false });
    }
  }
  await serveLane(head, tunnel, reader, writer, context);
}

/**
 * Answers a lane's requests one after another (`relay/lanes.ts`): the next head follows each clean
 * exchange, until the relay ends the lane. A WebSocket takes the stream over; a failure ends it.
 */
async function serveLane(
  first: FrameOf<"request">,
  firstTunnel: Tunnel,
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  context: AnswerContext,
) {
  for (let head = first, tunnel = firstTunnel;;) {
    if (!await answerHttp(tunnel, head, reader, writer, context) || head.upgrade === "websocket") return;
    let next: FrameOf<"request"> | null;
    try {
      next = await reader.read() as FrameOf<"request"> | null;
      if (next && next.type !== "request") throw new Error(`got ${next.type} on a lane, expected request`);
    } catch (error) {
      log.warn("bad lane from relay: {error}", { error: String(error) });
      return giveUp(reader, writer);
    }
    // The relay ended the lane (its visitor's connection closed): so does this side.
    if (!next) return giveUp(reader, writer);
    const found = context.find(`http:${next.tunnel}`);
    if (!found) {
      return giveUp(reader, writer, {
        type: "error",
        code: "unknown_tunnel",
        message: `no tunnel "${next.tunnel}" here`,
      });
    }
    [head, tunnel] = [next, found];
  }
}

/** Answers one HTTP request or WebSocket handshake; true when it ended cleanly and the lane may go on. */
async function answerHttp(
  tunnel: Tunnel,
  head: FrameOf<"request">,
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  context: AnswerContext,
) {
  const exchange = new Exchange(context.events, head);
  const offDone = context.events.on("request-done", (done) => {
    if (done.id !== exchange.id) return;
    offDone();
    const refused = done.error?.code === "origin_refused";
    context.originReached(tunnel, !refused);
    // Said once per request; a refused connection is said once per outage by the agent's health.
    if (done.error && !refused) {
      log.warn("{method} {target}: {message}", { ...head, message: done.error.message });
    }
  });
  const options = {
    origin: tunnel.spec.origin,
    originTimeoutMs: context.originTimeoutMs,
    closing: tunnel.channels,
  };
  try {
    if (head.upgrade !== "websocket") {
      return await answerRequest(head, reader, writer, { ...options, agent: tunnel.pool! }, exchange);
    }
    await answerWebSocket(head, reader, writer, options, exchange);
    return false;
  } catch (error) {
    // node:http and ws throw at once on a request they cannot send (say, a control byte in a header).
    exchange.done(502, { code: "origin_error", message: `cannot pass the request to the origin: ${error}` });
    await giveUp(reader, writer, { type: "error", code: "origin_error", message: String(error) });
    return false;
  }
}

/**
 * Ends a relay stream this client cannot serve, with `answer` if given. A close, not a reset: Deno's
 * QUIC may never show a reset to the relay, while a stream that ends early is a 502 there at once.
 */
async function giveUp(
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  answer?: FrameOf<"error">,
): Promise<void> {
  if (answer) {
    await writer.write(encodeFrame(answer)).catch(() => {
      // The relay gave up on the stream first; nothing is left to tell it.
    });
  }
  await writer.close().catch(() => {
    // As above.
  });
  await reader.cancel();
}
