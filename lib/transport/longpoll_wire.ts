/**
 * What both ends of a long-polling carrier share: how packets are framed in
 * request and response bodies, and the two buffers that make a cut poll lose
 * nothing: the {@link Outbox} keeps every packet until the other end
 * acknowledges it (and hands it out again when a poll carrying it failed or
 * went unanswered), the {@link Inbox} puts packets back in order and drops
 * the ones it has already.
 *
 * Body format (`application/octet-stream`), both directions: zero or more
 * packets, each
 * ```
 * u32 sequence number (big-endian) | u32 length (big-endian) | length bytes
 * ```
 * A packet of length 0 is the end of the stream (the sender's `end()`);
 * every other packet carries 1 to {@link PACKET_MAX_BYTES} bytes. An empty
 * body carries no packets (a poll, or nothing within the poll wait). Each
 * side numbers its own packets from 0. Acknowledgements travel in headers:
 * the request's `Ack` is the client's next expected number, the response's
 * `Ack` the relay's; the response's `More` counts packets still waiting. A
 * request with `Resend: 1` (the client's first after one of its requests
 * failed), or one whose `Poll` number (the client counts its requests) the
 * relay has seen already, has the relay hand out again everything it sent
 * and has not seen acknowledged: the lost answer may have carried some, and
 * the relay cannot know that a proxy cut an answer it finished writing. (A
 * repeated number is node:http under Deno sending a request again, unasked
 * and unseen by the client, after its kept-alive connection was reset:
 * denoland/deno#36786.)
 *
 * @example
 * ```ts
 * const outbox = new Outbox();
 * outbox.push(new TextEncoder().encode("hello"));
 * const body = encodeBatch(outbox.take(BATCH_MAX_BYTES, Date.now()));
 * const inbox = new Inbox();
 * inbox.accept(decodeBatch(body)); // [Uint8Array "hello"]
 * outbox.ack(inbox.expected);      // the packet is freed
 * ```
 * @module
 */

import { Duplex } from "node:stream";

/** Largest payload of one packet: what one `write` is cut into. */
export const PACKET_MAX_BYTES = 64 * 1024;
/** Largest body one request or response carries (16 full packets and their heads; 4 cut throughput by a third and saved no memory). */
export const BATCH_MAX_BYTES = 16 * (PACKET_MAX_BYTES + 8);
/**
 * Packets a sender may have unacknowledged, and how far past the next expected one a receiver keeps
 * packets that arrived early: 4 MiB each way per connection, which bounds both buffers.
 */
export const WINDOW_PACKETS = 64;
/**
 * How long a packet handed to a poll may go unacknowledged before it is handed out again: the poll
 * may have been cut after the sender finished writing it (a proxy dropping a response it buffered).
 */
export const RESEND_AFTER_MS = 3_000;

/** One numbered piece of the stream; empty `data` ends the stream. */
export interface Packet {
  seq: number;
  data: Uint8Array;
}

/** A body or header that does not follow the format above. */
export class LongPollFrameError extends Error {
  override name = "LongPollFrameError";
}

/** The body for `packets`. */
export function encodeBatch(packets: Packet[]): Uint8Array<ArrayBuffer> {
  const size = packets.reduce((sum, packet) => sum + 8 + packet.data.length, 0);
  const body = new Uint8Array(size);
  const view = new DataView(body.buffer);
  let at = 0;
  for (const { seq, data } of packets) {
    view.setUint32(at, seq);
    view.setUint32(at + 4, data.length);
    body.set(data, at + 8);
    at += 8 + data.length;
  }
  return body;
}

/** The packets in `body`; throws {@link LongPollFrameError} on a truncated or oversized one. */
export function decodeBatch(body: Uint8Array): Packet[] {
  if (body.length > BATCH_MAX_BYTES) throw new LongPollFrameError(`a body is over ${BATCH_MAX_BYTES} bytes`);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const packets: Packet[] = [];
  for (let at = 0; at < body.length;) {
    if (at + 8 > body.length) throw new LongPollFrameError("a packet head is cut short");
    const seq = view.getUint32(at);
    const length = view.getUint32(at + 4);
    if (length > PACKET_MAX_BYTES) throw new LongPollFrameError(`a packet is over ${PACKET_MAX_BYTES} bytes`);
    if (at + 8 + length > body.length) throw new LongPollFrameError("a packet is cut short");
    // A copy, not a view: a view would keep the whole body alive for as long as any of its packets is.
    packets.push({ seq, data: body.slice(at + 8, at + 8 + length) });
    at += 8 + length;
  }
  return packets;
}

/** The `Ack` header's number; throws {@link LongPollFrameError} when it is missing or not one. */
export function parseAck(value: string | null | undefined): number {
  if (!value || !/^\d{1,10}$/.test(value)) {
    throw new LongPollFrameError("the Ack header must be a packet number");
  }
  return Number(value);
}

/** The `Poll` header's number, undefined when there is none; throws {@link LongPollFrameError} on a malformed one. */
export function parsePollNumber(value: string | null | undefined): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (!/^\d{1,10}$/.test(value)) throw new LongPollFrameError("the Poll header must be a request number");
  return Number(value);
}

interface Outgoing extends Packet {
  /** When it was last handed to a poll; null = waiting to be (again). */
  sentAt: number | null;
}

/** Packets one side has written and the other has not acknowledged yet. */
export class Outbox {
  #packets: Outgoing[] = [];
  #next = 0;
  #waiters: (() => void)[] = [];

  /** Numbers `bytes` (cut into packets); an empty `bytes` is the end of the stream. */
  push(bytes: Uint8Array): void {
    let at = 0;
    do {
      const data = bytes.subarray(at, at + PACKET_MAX_BYTES);
      this.#packets.push({ seq: this.#next++, data, sentAt: null });
      at += data.length;
    } while (at < bytes.length);
  }

  /** Whether the window is full: the writer waits for {@link whenRoom}. */
  get full(): boolean {
    return this.#packets.length >= WINDOW_PACKETS;
  }

  /** Resolves once the window has room (or {@link fail} is called). */
  whenRoom(): Promise<void> {
    if (!this.full) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Frees every packet before `next` (the other side's next expected); throws on a number never sent. */
  ack(next: number): void {
    if (next > this.#next) {
      throw new LongPollFrameError(`Ack ${next} is past the last packet sent (${this.#next})`);
    }
    const before = this.#packets.length;
    while (this.#packets.length > 0 && this.#packets[0].seq < next) this.#packets.shift();
    if (this.#packets.length < before && !this.full) this.#wake();
  }

  /** Packets due to go out (never sent, returned, or unacknowledged for too long), up to `maxBytes` of body. */
  take(maxBytes: number, now: number): Packet[] {
    const taken: Packet[] = [];
    let size = 0;
    for (const packet of this.#packets) {
      if (!this.#due(packet, now)) continue;
      if (taken.length > 0 && size + 8 + packet.data.length > maxBytes) break;
      packet.sentAt = now;
      size += 8 + packet.data.length;
      taken.push({ seq: packet.seq, data: packet.data });
    }
    return taken;
  }

  /** Hands `packets` out again at once: the poll carrying them failed, so they may not have arrived. */
  giveBack(packets: Packet[]): void {
    const seqs = new Set(packets.map((packet) => packet.seq));
    for (const packet of this.#packets) if (seqs.has(packet.seq)) packet.sentAt = null;
  }

  /** Hands every packet sent and not acknowledged out again at once: the other side lost an answer. */
  giveBackAll(): void {
    for (const packet of this.#packets) packet.sentAt = null;
  }

  /** Packets due to go out now. */
  due(now: number): number {
    return this.#packets.filter((packet) => this.#due(packet, now)).length;
  }

  /** Packets not acknowledged yet, sent or not. */
  get size(): number {
    return this.#packets.length;
  }

  /** Wakes writers waiting for room, for good: the connection is gone. */
  fail(): void {
    this.#packets = [];
    this.#wake();
  }

  #due(packet: Outgoing, now: number): boolean {
    return packet.sentAt === null || now - packet.sentAt >= RESEND_AFTER_MS;
  }

  #wake() {
    for (const wake of this.#waiters.splice(0)) wake();
  }
}

/** What one side has received: the next packet it expects, and those that came early. */
export class Inbox {
  /** The next packet number expected: the `Ack` this side sends. */
  expected = 0;
  #early = new Map<number, Uint8Array>();

  /**
   * Takes the packets of one body; returns the payloads that are now next in order (an empty one
   * marks the end). Duplicates are dropped; early packets are kept within the window, dropped past it
   * (the sender cannot have sent them, unless it ignores the window).
   */
  accept(packets: Packet[]): Uint8Array[] {
    for (const { seq, data } of packets) {
      if (seq >= this.expected && seq < this.expected + WINDOW_PACKETS) this.#early.set(seq, data);
    }
    const ready: Uint8Array[] = [];
    for (let data = this.#early.get(this.expected); data; data = this.#early.get(this.expected)) {
      this.#early.delete(this.expected++);
      ready.push(data);
    }
    return ready;
  }
}

/**
 * The byte stream a long-polling carrier gives its user, on either end: writes become packets in
 * {@link outbox} (the write's callback waits while the window is full), packets taken in with
 * {@link deliver} become reads. `wantsMore` turns false while the reader is behind, so the carrier
 * stops fetching more until it catches up.
 */
export class PacketDuplex extends Duplex {
  readonly outbox = new Outbox();
  readonly inbox = new Inbox();
  #resumed: (() => void)[] = [];

  /** @param onOutgoing called whenever the outbox has something new to send. */
  constructor(private onOutgoing: () => void) {
    super({ allowHalfOpen: true });
  }

  /** Takes one body's packets in; returns whether the reader wants more. */
  deliver(packets: Packet[]): boolean {
    for (const data of this.inbox.accept(packets)) this.push(data.length === 0 ? null : data);
    return this.wantsMore;
  }

  /** Whether the reader has room for more; measured, not remembered, so a read that drained it counts. */
  get wantsMore(): boolean {
    return this.readableLength < this.readableHighWaterMark;
  }

  /** Resolves once the reader wants more, or the stream is gone. */
  whenWanted(): Promise<void> {
    if (this.wantsMore || this.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.#resumed.push(resolve));
  }

  override _read(): void {
    for (const resume of this.#resumed.splice(0)) resume();
  }

  override _write(chunk: Uint8Array, _encoding: string, callback: (error?: Error | null) => void): void {
    // A zero-length write would read as the end of the stream on the other side.
    if (chunk.length > 0) this.outbox.push(chunk);
    this.onOutgoing();
    this.outbox.whenRoom().then(() => callback(this.destroyed ? new Error("the carrier is closed") : null));
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.outbox.push(new Uint8Array(0));
    this.onOutgoing();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.outbox.fail();
    this._read();
    callback(error);
  }
}
