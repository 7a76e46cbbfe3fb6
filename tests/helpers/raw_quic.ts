/**
 * A raw QUIC client for a relay under test: trusts it by its pinned
 * fingerprint and opens connections on one endpoint, so tests and the fuzz
 * campaign can speak the protocol by hand (and badly, on purpose).
 * @module
 */
import { join } from "node:path";
import { ALPN } from "../../lib/protocol.ts";
import { trustRelay } from "../../lib/trust.ts";
import type { Processes, RelayHandle } from "./processes.ts";

/** Returns `connect()` for new QUIC connections to `relay`, and `close()` for the endpoint. */
export async function rawQuic(processes: Processes, relay: RelayHandle) {
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
        alpnProtocols: [ALPN],
        endpoint,
        maxConcurrentBidirectionalStreams: 10_000,
      }),
    close: () => endpoint.close(),
  };
}
