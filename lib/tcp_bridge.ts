/**
 * Raw TCP over QUIC streams: each public TCP connection to a tunnel's port
 * becomes one stream (`tcp-open`, then each direction's bytes as a body, see
 * `codec.ts`), which the client splices to a connection to its local port. A
 * FIN on either end is carried across as a body's end marker and back to a
 * TCP half-close; an error on either end is carried as an abort marker and
 * closes both.
 *
 * @example
 * ```ts
 * const listener = new TcpTunnelListener({ hostname: "0.0.0.0", port: 20001, maxConnections: 256, route });
 * listener.close();
 * ```
 * @module
 */
import { encodeFrame, FrameReader, writeBodyAbort, writeBodyEnd, writeBodyPiece } from "./codec.ts";
import type { FrameOf } from "./protocol.ts";
import { openStream, type Origin } from "./http_bridge.ts";
import { getLogger } from "./log.ts";

const log = getLogger(["reverprox", "tcp"]);
const TCP_READ_BYTES = 64 * 1024;

/**
 * Copies bytes both ways between a TCP connection and a QUIC stream until
 * both directions end; half-closes pass through, an error on one side resets
 * the other. Resolves with the byte counts once everything is closed.
 */
export async function splice(
  tcp: Deno.TcpConn,
  fromQuic: ReadableStream<Uint8Array>,
  toQuic: WritableStreamDefaultWriter<Uint8Array>,
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
    writeBodyAbort(toQuic).catch(() => {});
    fromQuic.cancel("connection reset").catch(() => {});
  };
  // Plain read/write, not tcp.readable/writable: a TCP stream that ends closes the whole
  // connection, which would cut the other direction of a half-closed one.
  const outbound = (async () => {
    while (true) {
      const buffer = new Uint8Array(TCP_READ_BYTES);
      const n = await tcp.read(buffer);
      if (n === null) break;
      await writeBodyPiece(toQuic, buffer.subarray(0, n));
      sent += n;
    }
    await writeBodyEnd(toQuic);
    await toQuic.close();
  })().catch(fail);
  const inbound = (async () => {
    for await (const chunk of fromQuic) {
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

/** Relay side: sends a public TCP connection through a new stream on `conn`. */
export async function forwardTcp(conn: Deno.QuicConn, tunnel: string, tcp: Deno.TcpConn): Promise<void> {
  const stream = await openStream(conn);
  if (!stream) return tcp.close();
  const writer = stream.writable.getWriter();
  const remote = tcp.remoteAddr;
  await writer.write(encodeFrame({ type: "tcp-open", tunnel, remoteAddr: remote.hostname }));
  await splice(tcp, new FrameReader(stream.readable).body(), writer);
}

/** Client side: dials the local port for a `tcp-open` and splices; false when the origin refused. */
export async function answerTcp(
  head: FrameOf<"tcp-open">,
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  origin: Origin,
): Promise<boolean> {
  let tcp: Deno.TcpConn;
  try {
    tcp = await Deno.connect({ hostname: origin.hostname, port: origin.port });
  } catch {
    await writeBodyAbort(writer).catch(() => {});
    await reader.cancel("origin refused");
    return false;
  }
  const { sent, received } = await splice(tcp, reader.body(), writer);
  log.debug("tcp connection from {remote} done: {received} bytes in, {sent} out", {
    remote: head.remoteAddr,
    received,
    sent,
  });
  return true;
}

/** What a public TCP port asks the relay for each new connection. */
export type TcpRoute = (tcp: Deno.TcpConn) => Promise<void> | "offline";

/** One public TCP port: accepts connections and hands them to the owning client, up to a cap. */
export class TcpTunnelListener {
  #listener: Deno.TcpListener;
  #active = new Set<Deno.TcpConn>();

  constructor(readonly options: { hostname: string; port: number; maxConnections: number; route: TcpRoute }) {
    this.#listener = Deno.listen({ hostname: options.hostname, port: options.port });
    this.#accept();
  }

  async #accept() {
    try {
      for await (const tcp of this.#listener) {
        if (this.#active.size >= this.options.maxConnections) {
          log.warn("port {port}: {max} connections open; refusing a new one", {
            port: this.options.port,
            max: this.options.maxConnections,
          });
          tcp.close();
          continue;
        }
        const routed = this.options.route(tcp);
        if (routed === "offline") {
          tcp.close();
          continue;
        }
        this.#active.add(tcp);
        routed.catch(() => {}).finally(() => this.#active.delete(tcp));
      }
    } catch {
      // Listener closed.
    }
  }

  /** Stops listening and drops every open connection. */
  close() {
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    for (const tcp of this.#active) {
      try {
        tcp.close();
      } catch {
        // Already closed.
      }
    }
    this.#active.clear();
  }
}
