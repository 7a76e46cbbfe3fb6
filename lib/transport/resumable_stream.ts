/**
 * One logical stream of a {@link ResumableConnection} (`resumable.ts`): a
 * bidirectional byte stream that outlives the physical stream carrying it.
 * Each direction numbers its bytes; the end of the bytes (FIN) counts as one
 * more. The receiver acknowledges what its reader consumed (every
 * {@link ACK_EVERY_BYTES}, and on a short timer); the sender keeps what is not
 * acknowledged, at most {@link SEND_WINDOW_BYTES} (its writer waits beyond), so
 * that on a new physical stream it resends from where the other side stopped:
 * no byte lost, none twice.
 *
 * On a physical stream, records: `[type u8][length u32][payload]`.
 *
 * @example
 * ```ts
 * import type { TunnelStream } from "./types.ts";
 * declare const physical: TunnelStream;
 * const stream = new LogicalStream(1, () => {});
 * const reader = new RecordReader(physical.readable);
 * const writer = physical.writable.getWriter();
 * await writer.write(encodeRecord(Rec.open, offsetPayload(1, stream.received)));
 * const answer = await reader.read(); // the other side's `open`: its id and what it received
 * stream.attach(writer, reader, answer!.payload);
 * ```
 * @module
 */

/**
 * Record types on a physical stream. `stop`: the sender's reader will read no more (it cancelled), so the
 * other side's writer fails from now on while its reader carries on, as QUIC's STOP_SENDING.
 */
export const Rec = { open: 1, data: 2, ack: 3, fin: 4, reset: 5, resume: 6, stop: 7 } as const;

/** Unacknowledged bytes a sender keeps per stream before its writer waits. */
export const SEND_WINDOW_BYTES = 2 * 1024 * 1024;
/** A receiver acknowledges at least this often, in bytes its reader consumed. */
export const ACK_EVERY_BYTES = 128 * 1024;
/** …and this long after consuming anything, so a quiet stream's sender can drop what it keeps. */
const ACK_DELAY_MS = 100;
/** Largest data record. */
const MAX_DATA_BYTES = 64 * 1024;

/** One record: `[type u8][length u32][payload]`. */
export function encodeRecord(type: number, payload: Uint8Array = new Uint8Array()): Uint8Array {
  const out = new Uint8Array(5 + payload.length);
  out[0] = type;
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
}

/** A stream id and a byte offset, as `open`, `resume` and `ack` carry them (ids and offsets below 2^53). */
export function offsetPayload(id: number, offset: number): Uint8Array {
  const out = new Uint8Array(16);
  const view = new DataView(out.buffer);
  view.setFloat64(0, id);
  view.setFloat64(8, offset);
  return out;
}

export function readOffsets(payload: Uint8Array): { id: number; offset: number } {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return { id: view.getFloat64(0), offset: view.getFloat64(8) };
}

/** Reads records off a physical stream's bytes, however they were cut into chunks. */
export class RecordReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buffer: Uint8Array = new Uint8Array();

  constructor(readable: ReadableStream<Uint8Array>) {
    this.#reader = readable.getReader();
  }

  /** The next record; null at a clean end. Rejects when the stream breaks or ends mid-record. */
  async read(): Promise<{ type: number; payload: Uint8Array } | null> {
    if (!await this.#fill(5)) return null;
    const length = new DataView(this.#buffer.buffer, this.#buffer.byteOffset).getUint32(1);
    if (length > MAX_DATA_BYTES + 16) throw new Error(`record of ${length} bytes`);
    if (!await this.#fill(5 + length)) throw new Error("stream ended inside a record");
    // A view, not a copy: chunks read here are never written to again.
    const record = { type: this.#buffer[0], payload: this.#buffer.subarray(5, 5 + length) };
    this.#buffer = this.#buffer.subarray(5 + length);
    return record;
  }

  cancel(): void {
    this.#reader.cancel().catch(() => {
      // Broken already: nothing left to cancel.
    });
  }

  async #fill(bytes: number): Promise<boolean> {
    while (this.#buffer.length < bytes) {
      const { value, done } = await this.#reader.read();
      if (done) {
        if (this.#buffer.length === 0) return false;
        throw new Error("stream ended inside a record");
      }
      if (this.#buffer.length === 0) {
        this.#buffer = value;
        continue;
      }
      const joined = new Uint8Array(this.#buffer.length + value.length);
      joined.set(this.#buffer);
      joined.set(value, this.#buffer.length);
      this.#buffer = joined;
    }
    return true;
  }
}

/** A logical stream; `onDone` runs once both directions ended (or it was reset). */
export class LogicalStream {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  /** Bytes (and FIN) received in order, so far. */
  received = 0;
  /**
   * Whether the other side has heard of it (it sent something back, if only its answering `open`): else
   * the next physical stream opens it rather than resumes it.
   */
  carried = false;
  #incoming!: ReadableStreamDefaultController<Uint8Array>;
  /** Bytes the reader consumed (known when it asks for more), and the last offset acknowledged. */
  #consumedTo = 0;
  #ackSent = 0;
  #ackTimer?: ReturnType<typeof setTimeout>;
  /** Unacknowledged bytes, from offset {@link #acked}. */
  #kept: Uint8Array[] = [];
  #acked = 0;
  /** Bytes (and FIN) written by our writer, and how far of them the current physical stream got. */
  #written = 0;
  #onWire = 0;
  #finWritten = false;
  #finReceived = false;
  #writer: WritableStreamDefaultWriter<Uint8Array> | null = null;
  #reader: RecordReader | null = null;
  #flushing: Promise<void> = Promise.resolve();
  #windowOpen: (() => void) | null = null;
  #ended = false;
  /** Our reader cancelled: what arrives is counted and acknowledged, not kept. */
  #readStopped = false;

  constructor(readonly id: number, private readonly onDone: () => void) {
    this.readable = new ReadableStream<Uint8Array>({
      start: (controller) => void (this.#incoming = controller),
      pull: () => this.#consumed(),
      cancel: () => this.#stopReading(),
    }, { highWaterMark: 0 });
    this.writable = new WritableStream<Uint8Array>({
      write: (chunk) => this.#write(chunk),
      close: () => this.#write(null),
      abort: () => this.reset(true),
    });
  }

  /**
   * Carries the stream over a new physical stream: the other side received up to the offset in
   * `peerOpen` (an `open` or `resume` payload); everything after it is sent again.
   */
  attach(writer: WritableStreamDefaultWriter<Uint8Array>, reader: RecordReader, peerOpen: Uint8Array): void {
    this.#writer = writer;
    this.#reader = reader;
    this.#ackedTo(readOffsets(peerOpen).offset);
    this.#onWire = this.#acked;
    this.#flush();
    if (this.#readStopped) this.#sendStop();
    this.#readLoop(reader, writer);
  }

  /** The physical stream broke: keep everything until the next {@link attach}. */
  detach(writer: WritableStreamDefaultWriter<Uint8Array>): void {
    if (this.#writer === writer) this.#writer = null;
  }

  /**
   * Stops taking records from the old physical stream (one the other side may not know is dead yet), so
   * {@link received} stays what the next `open`/`resume` says: what comes after is sent again.
   */
  leaveOld(): void {
    this.#reader?.cancel();
    this.#reader = null;
    this.#writer = null;
  }

  /** Ends it at once both ways; `tell` sends a `reset` to the other side when a physical stream is there. */
  reset(tell: boolean, why = "stream reset"): void {
    if (this.#ended) return;
    // A reset that cannot be written went with its physical stream; the other side's grace ends the stream.
    if (tell) this.#writer?.write(encodeRecord(Rec.reset)).catch(() => {});
    this.#end();
    try {
      this.#incoming.error(new Error(why));
    } catch {
      // The reader had its end already.
    }
    this.#windowOpen?.();
  }

  async #readLoop(reader: RecordReader, writer: WritableStreamDefaultWriter<Uint8Array>) {
    try {
      for (let record; (record = await reader.read()) && reader === this.#reader;) {
        this.carried = true;
        if (record.type === Rec.data && !this.#finReceived) {
          this.received += record.payload.length;
          if (this.#readStopped) this.#consumed();
          else this.#incoming.enqueue(record.payload);
        } else if (record.type === Rec.ack) this.#ackedTo(readOffsets(record.payload).offset);
        else if (record.type === Rec.fin && !this.#finReceived) {
          this.#finReceived = true;
          this.received += 1;
          if (!this.#readStopped) this.#incoming.close();
          this.#sendAck();
        } else if (record.type === Rec.stop) this.#writeStopped();
        else if (record.type === Rec.reset) return this.reset(false, "reset by the other side");
      }
    } catch {
      // The physical stream broke with its connection: the next attach carries on.
    }
    this.detach(writer);
  }

  /** Our reader cancelled: the other side stops sending, and what it sent meanwhile is dropped here. */
  #stopReading() {
    if (this.#ended || this.#readStopped) return;
    this.#readStopped = true;
    this.#sendStop();
    if (this.#done) this.#end();
  }

  #sendStop() {
    this.#writer?.write(encodeRecord(Rec.stop)).catch(() => {
      // Lost with its physical stream: the next attach says it again.
    });
  }

  /** The other side reads no more: what we keep for it goes, and our writer fails from now on. */
  #writeStopped() {
    this.#finWritten = true;
    this.#kept = [];
    this.#acked = this.#onWire = this.#written;
    this.#windowOpen?.();
    this.#windowOpen = null;
    if (this.#done) this.#end();
  }

  async #write(chunk: Uint8Array | null) {
    if (this.#ended || this.#finWritten) throw new Error("stream ended");
    if (chunk === null) {
      this.#finWritten = true;
      this.#written += 1;
    } else {
      for (let at = 0; at < chunk.length; at += MAX_DATA_BYTES) {
        this.#kept.push(chunk.subarray(at, at + MAX_DATA_BYTES));
      }
      this.#written += chunk.length;
    }
    this.#flush();
    while (!this.#ended && this.#written - this.#acked > SEND_WINDOW_BYTES) {
      await new Promise<void>((resolve) => this.#windowOpen = resolve);
    }
    if (this.#ended && !this.#done) throw new Error("stream reset");
  }

  /** Sends what the current physical stream has not had yet, one flush at a time. */
  #flush() {
    this.#flushing = this.#flushing.then(async () => {
      const writer = this.#writer;
      while (writer && writer === this.#writer && this.#onWire < this.#written) {
        const next = this.#nextOnWire();
        this.#onWire += next.payload?.length ?? 1;
        await writer.write(encodeRecord(next.type, next.payload)).catch(() => this.detach(writer));
      }
    });
  }

  /** The record for offset {@link #onWire}: data from the kept chunks, or the FIN after them. */
  #nextOnWire(): { type: number; payload?: Uint8Array } {
    let offset = this.#acked;
    for (const chunk of this.#kept) {
      if (this.#onWire < offset + chunk.length) {
        return { type: Rec.data, payload: chunk.subarray(this.#onWire - offset) };
      }
      offset += chunk.length;
    }
    return { type: Rec.fin };
  }

  #ackedTo(offset: number) {
    while (this.#kept.length && this.#acked + this.#kept[0].length <= offset) {
      this.#acked += this.#kept.shift()!.length;
    }
    if (this.#kept.length && offset > this.#acked) {
      this.#kept[0] = this.#kept[0].subarray(offset - this.#acked);
      this.#acked = offset;
    }
    if (this.#finWritten && offset === this.#written) this.#acked = offset;
    this.#windowOpen?.();
    this.#windowOpen = null;
    if (this.#done) this.#end();
  }

  get #done(): boolean {
    return this.#finWritten && this.#acked === this.#written && (this.#finReceived || this.#readStopped);
  }

  /** The reader asks for more: its queue is empty, so it consumed all received. */
  #consumed() {
    this.#consumedTo = this.received;
    if (this.#consumedTo - this.#ackSent >= ACK_EVERY_BYTES) return this.#sendAck();
    this.#ackTimer ??= setTimeout(() => this.#sendAck(), ACK_DELAY_MS);
  }

  /** Acknowledges what the reader consumed; at the FIN, all (nothing more can come to fill a queue). */
  #sendAck() {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    const offset = this.#finReceived ? this.received : this.#consumedTo;
    this.#ackSent = offset;
    this.#writer?.write(encodeRecord(Rec.ack, offsetPayload(this.id, offset))).catch(() => {
      // Lost with its physical stream: the next attach says the same in its `resume`.
    });
    if (this.#done) this.#end();
  }

  #end() {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#ackTimer);
    this.#kept = [];
    this.onDone();
  }
}
