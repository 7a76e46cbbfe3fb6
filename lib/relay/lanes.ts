/**
 * Lanes: long-lived streams to a client, each carrying one visitor
 * connection's requests one after another (HTTP/1.1 answers a connection's
 * requests in order anyway), so a request costs no stream of its own. A lane
 * is reused only after an exchange that ended cleanly (whole request body
 * sent, whole answer read); any failure, abort or timeout closes it, and the
 * next request opens a fresh one. It closes when its visitor's connection
 * does.
 *
 * @example
 * ```ts
 * import type { TunnelConnection } from "../transport/types.ts";
 * declare const conn: TunnelConnection, visitorSocket: { once(event: "close", listener: () => void): unknown };
 * const lanes = new Lanes(conn);
 * const lane = await lanes.take(visitorSocket); // a free lane for this connection, or a new one
 * lane?.finish(true);                           // the exchange ended cleanly: ready for the next
 * ```
 * @module
 */
import { FrameReader } from "../wire/codec.ts";
import type { TunnelConnection } from "../transport/types.ts";

/** What a lane is kept for: a visitor's connection, which says when it closes. */
export interface LaneOwner {
  once(event: "close", listener: () => void): unknown;
}

export class Lane {
  #busy = true;
  #closed = false;

  constructor(
    readonly writer: WritableStreamDefaultWriter<Uint8Array>,
    readonly reader: FrameReader,
  ) {}

  get free(): boolean {
    return !this.#busy && !this.#closed;
  }

  /** The exchange on it is over: a clean one frees the lane for the next, any other closes it. */
  finish(clean: boolean): void {
    if (clean && !this.#closed) this.#busy = false;
    else this.close();
  }

  take(): void {
    this.#busy = true;
  }

  /** Ends the lane: the client sees its stream end after the last exchange. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.writer.close().catch(() => {
      // Closed or aborted already (an abort marker ends the stream too).
    });
    this.reader.cancel("lane closed");
  }
}

/** A client connection's lanes, one per visitor connection. */
export class Lanes {
  #byOwner = new WeakMap<LaneOwner, Lane>();

  constructor(private readonly conn: TunnelConnection) {}

  /** The owner's free lane, taken for an exchange; else a new one; null when the client is gone. */
  async take(owner: LaneOwner | undefined): Promise<Lane | null> {
    const kept = owner && this.#byOwner.get(owner);
    if (kept?.free) {
      kept.take();
      return kept;
    }
    const stream = await this.conn.openStream();
    if (!stream) return null;
    const lane = new Lane(stream.writable.getWriter(), new FrameReader(stream.readable));
    if (owner) {
      // A lane it replaces was closed already, by the failure that left it unfree.
      if (!this.#byOwner.has(owner)) owner.once("close", () => this.#byOwner.get(owner)?.close());
      this.#byOwner.set(owner, lane);
    }
    return lane;
  }
}
