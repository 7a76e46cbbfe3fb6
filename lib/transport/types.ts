/**
 * The transport seam: what relay and agent need from the connection between
 * them, whatever carries it. One connection per agent; the agent opens the
 * first stream (control), the relay opens one per request or TCP connection.
 * QUIC (`quic.ts`) is the real one; `memory.ts` pairs two ends in one process
 * for fast tests.
 *
 * @example
 * ```ts
 * import { memoryPair } from "./memory.ts";
 * const [agentEnd, relayEnd] = memoryPair();
 * const stream = await agentEnd.openStream();
 * const incoming = await relayEnd.incomingStreams.getReader().read();
 * ```
 * @module
 */

/** One bidirectional byte stream of a tunnel connection. */
export interface TunnelStream {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
}

/** Why a connection closed: a code both sides know (`CloseCode` in `wire/protocol.ts`) and words for people. */
export interface CloseInfo {
  code: number;
  reason: string;
}

/** A connection between a relay and an agent, carrying many streams. */
export interface TunnelConnection {
  /** What carries it, for logs and status: `quic`, `memory`. */
  readonly transport: string;
  /** The other end's address. */
  readonly peer: { hostname: string; port: number };
  /** The protocol version the ends agreed on (ALPN), where the transport negotiates one. */
  readonly alpn?: string;
  /** Opens a new stream; null once the connection is gone. */
  openStream(): Promise<TunnelStream | null>;
  /** The streams the other end opens, in order; it ends when the connection closes. */
  readonly incomingStreams: ReadableStream<TunnelStream>;
  /** Settles once the connection is closed, by either end, with the code and reason given; never rejects. */
  readonly closed: Promise<CloseInfo>;
  /** Closes the connection and every stream on it, telling the other end why. */
  close(info: CloseInfo): void;
}

/** Where a relay accepts agents' connections. */
export interface TunnelListener extends AsyncIterable<TunnelConnection> {
  /** Stops accepting new connections; open ones stay until closed. */
  stop(): void;
}
