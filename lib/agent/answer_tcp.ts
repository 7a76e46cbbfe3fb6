/**
 * The client's half of a TCP tunnel: each `tcp-open` stream is spliced to a
 * new connection to the local port.
 *
 * @module
 */
import { type FrameReader, writeBodyAbort } from "../wire/codec.ts";
import type { FrameOf } from "../wire/protocol.ts";
import { splice } from "../bridge/tcp.ts";
import { getLogger } from "../shared/log.ts";
import { type Origin, originLabel } from "./origin.ts";

const log = getLogger(["reverprox", "tcp"]);

/**
 * Dials the local port for a `tcp-open` and splices; false when the origin cannot be reached. When
 * `closing` aborts (the tunnel was paused or removed), the connection is closed.
 */
export async function answerTcp(
  head: FrameOf<"tcp-open">,
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  origin: Origin,
  closing: AbortSignal,
): Promise<boolean> {
  let tcp: Deno.TcpConn;
  try {
    tcp = await Deno.connect({ hostname: origin.hostname, port: origin.port });
  } catch (error) {
    // The agent says once per outage that the origin is down; this is the detail.
    log.debug("cannot reach {origin}: {error}", { origin: originLabel(origin), error: String(error) });
    await writeBodyAbort(writer).catch(() => {
      // The stream is gone already: the relay has closed the visitor's connection.
    });
    await reader.cancel("origin refused");
    return false;
  }
  const close = () => {
    try {
      tcp.close();
    } catch {
      // The splice closed it already.
    }
  };
  closing.addEventListener("abort", close, { once: true });
  const { sent, received } = await splice(tcp, reader.body(), writer);
  closing.removeEventListener("abort", close);
  log.debug("tcp connection from {remote} done: {received} bytes in, {sent} out", {
    remote: head.remoteAddr,
    received,
    sent,
  });
  return true;
}
