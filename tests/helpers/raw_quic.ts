/**
 * A raw QUIC client for a relay under test: trusts it by its pinned
 * fingerprint and opens connections on one endpoint, so tests and the fuzz
 * campaign can speak the protocol by hand (and badly, on purpose).
 * @module
 */
import { join } from "node:path";
import { encodeFrame, FrameReader } from "../../lib/wire/codec.ts";
import { ALPN, PROTOCOL_VERSION } from "../../lib/wire/protocol.ts";
import { trustRelay } from "../../lib/agent/trust.ts";
import type { Processes, RelayHandle } from "./processes.ts";

/**
 * Returns `connect()` for new QUIC connections to `relay` (speaking `alpn`, this version's by default),
 * and `close()` for the endpoint.
 */
export async function rawQuic(processes: Processes, relay: RelayHandle, alpn = ALPN) {
  const trusted = await trustRelay({ hostname: "127.0.0.1", port: relay.quicPort }, {
    pinned: relay.fingerprint,
    knownRelaysFile: join(await processes.tempDir(), "known"),
  });
  const endpoint = new Deno.QuicEndpoint();
  return {
    connect: () =>
      Deno.connectQuic({
        hostname: "127.0.0.1",
        port: relay.quicPort,
        serverName: trusted.domain,
        caCerts: [trusted.caCert],
        alpnProtocols: [alpn],
        endpoint,
        maxConcurrentBidirectionalStreams: 10_000,
      }),
    close: () => endpoint.close(),
  };
}

/**
 * Connects as a hand-made client holding http tunnel `name`, and answers the
 * relay's heartbeats so the tunnel stays up. The relay's request streams
 * arrive on `conn.incomingBidirectionalStreams`.
 */
export async function rawTunnel(quic: Awaited<ReturnType<typeof rawQuic>>, name: string) {
  const conn = await quic.connect();
  conn.closed.catch(() => {});
  const control = await conn.createBidirectionalStream();
  const writer = control.writable.getWriter();
  await writer.write(encodeFrame({
    type: "hello",
    version: PROTOCOL_VERSION,
    clientId: crypto.randomUUID(),
    tunnels: [{ kind: "http", name }],
  }));
  const reader = new FrameReader(control.readable);
  const welcome = await reader.expect("welcome");
  (async () => {
    for (let frame; (frame = await reader.read());) {
      if (frame.type === "ping") await writer.write(encodeFrame({ type: "pong", seq: frame.seq }));
    }
  })().catch(() => {});
  return {
    conn,
    url: welcome.tunnels[0].url,
    async close() {
      conn.close({ closeCode: 0, reason: "done" });
      await conn.closed.catch(() => {});
    },
  };
}
