/**
 * A TCP connection spliced to a tunnel stream, for both ends of a TCP tunnel:
 * the relay splices each public connection to a new stream (`tcp-open`, then
 * each direction's bytes as a body, see `codec.ts`), the client splices that
 * stream to a connection to its local port. A FIN on either end is carried
 * across as a body's end marker and back to a TCP half-close; an error on
 * either end is carried as an abort marker and closes both.
 *
 * @module
 */
import { writeBodyAbort, writeBodyEnd, writeBodyPiece } from "../wire/codec.ts";

const TCP_READ_BYTES = 64 * 1024;

/**
 * Copies bytes both ways between a TCP connection and a tunnel stream until
 * both directions end; half-closes pass through, an error on one side aborts
 * the other (an abort marker into the tunnel, a close of the TCP connection).
 * Resolves with the byte counts once everything is closed.
 */
export async function splice(
  tcp: Deno.TcpConn,
  fromTunnel: ReadableStream<Uint8Array>,
  toTunnel: WritableStreamDefaultWriter<Uint8Array>,
): Promise<{ sent: number; received: number }> {
  let sent = 0, received = 0;
  let failed = false;
  const fail = () => {
    if (failed) return;
    failed = true;
    try {
      tcp.close();
    } catch {
      // Already closed.
    }
    // Either may fail on a stream that is gone already, which is all these would tell its peer.
    writeBodyAbort(toTunnel).catch(() => {});
    fromTunnel.cancel("connection reset").catch(() => {});
  };
  // Plain read/write, not tcp.readable/writable: a TCP stream that ends closes the whole
  // connection, which would cut the other direction of a half-closed one.
  const outbound = (async () => {
    while (true) {
      const buffer = new Uint8Array(TCP_READ_BYTES);
      const n = await tcp.read(buffer);
      if (n === null) break;
      await writeBodyPiece(toTunnel, buffer.subarray(0, n));
      sent += n;
    }
    await writeBodyEnd(toTunnel);
    await toTunnel.close();
  })().catch(fail);
  const inbound = (async () => {
    for await (const chunk of fromTunnel) {
      for (let written = 0; written < chunk.length;) written += await tcp.write(chunk.subarray(written));
      received += chunk.length;
    }
    await tcp.closeWrite();
  })().catch(fail);
  await Promise.all([outbound, inbound]);
  if (!failed) {
    try {
      tcp.close();
    } catch {
      // The readable side closed it already.
    }
  }
  return { sent, received };
}
