/**
 * The relay's half of a WebSocket: the visitor's handshake travels to the
 * client as a `request` with `upgrade: "websocket"`; the client opens its own
 * WebSocket to the origin and answers 101 with the origin's subprotocol and
 * handshake headers, and the relay then completes the visitor's handshake
 * with them (`accept`). An origin that refuses the upgrade answers as for any
 * request.
 *
 * @module
 */
import WebSocket from "ws";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { encodeFrame, FrameReader } from "../wire/codec.ts";
import type { FrameOf } from "../wire/protocol.ts";
import { validHeaderPairs } from "../shared/headers.ts";
import type { TunnelConnection } from "../transport/types.ts";
import { MAX_WS_MESSAGE_BYTES, relayMessages, withoutHandshake } from "../bridge/websocket.ts";
import { errorPage } from "./public/pages.ts";
import type { AcceptWebSocket } from "./public/server.ts";
import { originErrorPage, tunnelGone, visitorResponse } from "./forward_http.ts";
import { TimeoutError, withTimeout } from "../shared/async.ts";
import { getLogger } from "../shared/log.ts";

const log = getLogger(["reverprox", "http"]);

/**
 * Asks the client to open the origin's WebSocket; on 101 completes the visitor's handshake with `accept`
 * and relays messages until either side closes. `onSettled` runs once the handshake is over: an open
 * WebSocket no longer counts as a request in flight.
 */
export async function forwardWebSocket(
  conn: TunnelConnection,
  head: FrameOf<"request">,
  accept: AcceptWebSocket,
  options: { responseTimeoutMs: number; onSettled?: () => void },
): Promise<Response> {
  const settle = (response: Response) => (options.onSettled?.(), response);
  const stream = await conn.openStream();
  if (!stream) return settle(tunnelGone(head.tunnel));
  const writer = stream.writable.getWriter();
  const reader = new FrameReader(stream.readable);
  const abandon = async (response: Response) => {
    // A stream that ends without a close frame tells the client the visitor is gone; closing fails only
    // on a stream that is gone already, which tells it the same.
    await writer.close().catch(() => {});
    await reader.cancel("abandoned");
    return settle(response);
  };
  const answer = await handshakeAnswer(head, reader, writer, options.responseTimeoutMs);
  if (answer instanceof Response) return abandon(answer);
  if (answer.status !== 101) {
    // The origin refused the upgrade with an ordinary response: it goes to the visitor like any other. The
    // stream's end only tells the client nothing follows; a stream gone already says the same.
    await writer.close().catch(() => {});
    return visitorResponse(head.method, answer, reader, { onSettled: options.onSettled });
  }
  let socket: WebSocket;
  try {
    socket = await accept({
      protocol: answer.headers.find(([name]) => name.toLowerCase() === "sec-websocket-protocol")?.[1],
      headers: withoutHandshake(answer.headers),
      maxPayload: MAX_WS_MESSAGE_BYTES,
    });
  } catch {
    // The visitor left mid-handshake; this answer goes nowhere.
    return abandon(errorPage(400, "bad_request", "The visitor left during the WebSocket handshake."));
  }
  // relayMessages settles once both sides closed; should it fail, dropping the visitor is all that is left.
  relayMessages(socket, reader, writer).catch(() => socket.terminate());
  return settle(RESPONSE_ALREADY_SENT);
}

/** Sends the handshake `head`; the client's answer, or the page when there is none or it is no HTTP. */
async function handshakeAnswer(
  head: FrameOf<"request">,
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  responseTimeoutMs: number,
): Promise<FrameOf<"response"> | Response> {
  let answer: FrameOf<"response" | "error">;
  try {
    await writer.write(encodeFrame(head));
    answer = await withTimeout(reader.expect("response", "error"), responseTimeoutMs, "handshake answer");
  } catch (error) {
    if (error instanceof TimeoutError) {
      return errorPage(504, "origin_timeout", "The tunnel client did not answer in time.");
    }
    log.debug("the tunnel client dropped a WebSocket handshake: {error}", { error: String(error) });
    return errorPage(502, "client_failed", "The tunnel client dropped the request.");
  }
  if (answer.type === "error") return originErrorPage(answer);
  if (answer.status === 101 && !validHeaderPairs(answer.headers)) {
    return errorPage(502, "origin_error", "The origin's handshake answer is not valid HTTP.");
  }
  return answer;
}
