/**
 * The client's half of a WebSocket: opens the origin's WebSocket with the
 * visitor's headers and subprotocols, answers the relay with the origin's 101
 * (or its refusal, passed on as any response), then relays messages until
 * either side closes.
 *
 * @module
 */
import http from "node:http";
import WebSocket from "ws";
import { encodeFrame, type FrameReader } from "../wire/codec.ts";
import type { FrameOf } from "../wire/protocol.ts";
import { type HeaderPairs, rawHeaderPairs } from "../shared/headers.ts";
import { hostPort } from "../shared/host_port.ts";
import {
  MAX_WS_MESSAGE_BYTES,
  offeredProtocols,
  relayMessages,
  withoutHandshake,
} from "../bridge/websocket.ts";
import { malformedAnswer, sendResponse } from "./answer_http.ts";
import type { Origin } from "./origin.ts";
import type { Exchange } from "./exchange.ts";

/** The error frame for an origin WebSocket that failed to open with `error`. */
function handshakeFailure(error: NodeJS.ErrnoException): FrameOf<"error"> {
  const failed = (code: FrameOf<"error">["code"]) =>
    ({ type: "error", code, message: `The origin's WebSocket failed: ${error.message}` }) as const;
  if (error.code === "ECONNREFUSED") return failed("origin_refused");
  return malformedAnswer(error) ?? failed("origin_error");
}

type HandshakeOutcome = "open" | http.IncomingMessage | FrameOf<"error">;

/**
 * How the origin answered `socket`'s handshake: open, an ordinary response (a refusal), or the error
 * frame that says why there is none. Past `timeoutMs` without an answer the socket is dropped: our own
 * timer rather than ws's `handshakeTimeout`, whose error says so only in its message text.
 */
function handshakeOutcome(socket: WebSocket, timeoutMs: number): Promise<HandshakeOutcome> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return new Promise<HandshakeOutcome>((resolve) => {
    timer = setTimeout(() => {
      const message = `The origin did not answer the WebSocket handshake within ${timeoutMs} ms.`;
      resolve({ type: "error", code: "origin_timeout", message });
      socket.terminate();
    }, timeoutMs);
    socket.once("open", () => {
      // Held until relayMessages listens: an origin that greets at once (Vite's HMR does) would
      // otherwise have its first messages emitted to nobody.
      socket.pause();
      resolve("open");
    });
    socket.once("unexpected-response", (_request, response) => resolve(response));
    // Not once: ws also reports failures after the first settled this (an invalid frame once open, junk
    // after a refusal, the abort of a handshake that timed out); the close that follows such a failure
    // reaches the visitor.
    socket.on("error", (error: NodeJS.ErrnoException) => resolve(handshakeFailure(error)));
  }).finally(() => clearTimeout(timer));
}

/** Opens the origin's WebSocket for `head` and relays messages until either side closes; tells `exchange`. */
export async function answerWebSocket(
  head: FrameOf<"request">,
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  /** `closing` aborts when the tunnel is paused or removed: the WebSocket then closes with a reason. */
  options: { origin: Origin; originTimeoutMs: number; closing: AbortSignal },
  exchange: Exchange,
): Promise<void> {
  const { origin } = options;
  const scheme = origin.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(
    `${scheme}//${hostPort(origin.hostname, origin.port)}${head.target}`,
    offeredProtocols(head.headers),
    {
      headers: Object.fromEntries(withoutHandshake(head.headers)),
      maxPayload: MAX_WS_MESSAGE_BYTES,
      followRedirects: false,
      rejectUnauthorized: false,
    },
  );

  let handshake: HeaderPairs = [];
  socket.once("upgrade", (response) => handshake = rawHeaderPairs(response.rawHeaders));
  const opened = await handshakeOutcome(socket, options.originTimeoutMs);
  if (opened instanceof http.IncomingMessage) {
    // The origin refused the upgrade with an ordinary response: pass it on as is, then drop the connection.
    if (!await sendResponse(opened, writer, exchange)) await reader.cancel("response broken");
    socket.terminate();
    return exchange.done();
  }
  if (opened !== "open") {
    await writer.write(encodeFrame(opened)).then(() => writer.close()).catch(() => {
      // The relay gave up on the stream first; nothing is left to tell it.
    });
    await reader.cancel();
    return exchange.done(opened.code === "origin_timeout" ? 504 : 502, opened);
  }
  exchange.response(101, handshake);
  // Not awaited: relayMessages queues its frames behind this one, and must listen before resuming. A failed
  // write means the stream is gone, which relayMessages sees too and answers by closing the origin's socket.
  writer.write(encodeFrame({ type: "response", status: 101, headers: handshake })).catch(() => {});
  // The origin's socket is this hop's: its messages go out to the visitor, the stream's come in.
  const relayed = relayMessages(
    socket,
    reader,
    writer,
    (data, binary, fromOrigin) => exchange.wsMessage(fromOrigin ? "out" : "in", data, binary),
  );
  socket.resume();
  const close = () => socket.close(1001, `tunnel ${options.closing.reason} by its owner`);
  options.closing.addEventListener("abort", close, { once: true });
  await relayed;
  options.closing.removeEventListener("abort", close);
  exchange.done(101);
}
