/**
 * Two ends of one tunnel connection in one process, over Web Streams: the
 * relay and an agent can run side by side in a fast test, with no sockets
 * between them. Each direction of a stream buffers a few chunks, as QUIC's
 * flow control would, and backpressure holds beyond that.
 *
 * @example
 * ```ts
 * const [agentEnd, relayEnd] = memoryPair();
 * const stream = (await relayEnd.openStream())!;
 * const { value: peerStream } = await agentEnd.incomingStreams.getReader().read();
 * ```
 * @module
 */
import type { CloseInfo, TunnelConnection, TunnelStream } from "./types.ts";

/** Chunks each direction of a stream holds before a writer waits. */
const BUFFERED_CHUNKS = 16;

class MemoryConnection implements TunnelConnection {
  readonly transport = "memory";
  readonly peer = { hostname: "memory", port: 0 };
  readonly incomingStreams: ReadableStream<TunnelStream>;
  readonly closed: Promise<CloseInfo>;
  other!: MemoryConnection;
  #incoming!: ReadableStreamDefaultController<TunnelStream>;
  #settle!: (info: CloseInfo) => void;
  /** How to tear down each direction of each stream: erroring it fails its reader and its writer. */
  #pipes = new Set<TransformStreamDefaultController<Uint8Array>>();
  #open = true;

  constructor() {
    this.incomingStreams = new ReadableStream({ start: (controller) => void (this.#incoming = controller) });
    this.closed = new Promise((resolve) => this.#settle = resolve);
  }

  openStream(): Promise<TunnelStream | null> {
    if (!this.#open) return Promise.resolve(null);
    const out = this.#pipe(), back = this.#pipe();
    this.other.#incoming.enqueue({ readable: out.readable, writable: back.writable });
    return Promise.resolve({ readable: back.readable, writable: out.writable });
  }

  close(info: CloseInfo): void {
    this.#end(info);
    this.other.#end(info);
  }

  #pipe(): TransformStream<Uint8Array, Uint8Array> {
    return new TransformStream<Uint8Array, Uint8Array>(
      {
        start: (controller) => {
          this.#pipes.add(controller);
          this.other.#pipes.add(controller);
        },
      },
      { highWaterMark: BUFFERED_CHUNKS },
      { highWaterMark: BUFFERED_CHUNKS },
    );
  }

  #end(info: CloseInfo) {
    if (!this.#open) return;
    this.#open = false;
    const gone = new Error(`connection closed: ${info.reason}`);
    for (const pipe of this.#pipes) {
      try {
        pipe.error(gone);
      } catch {
        // This direction ended already (closed or cancelled by one of its ends).
      }
    }
    this.#pipes.clear();
    this.#incoming.close();
    this.#settle(info);
  }
}

/** Two connected ends: whatever one opens, the other receives. */
export function memoryPair(): [TunnelConnection, TunnelConnection] {
  const a = new MemoryConnection(), b = new MemoryConnection();
  a.other = b;
  b.other = a;
  return [a, b];
}
