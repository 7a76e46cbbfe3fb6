/**
 * Many streams over one ordered byte stream (a TLS socket), with yamux's
 * framing (a 12-byte header: version, type, flags, stream id, length) and its
 * per-stream credit: a sender may have at most {@link STREAM_WINDOW} bytes
 * unread by the receiver, so a download whose reader is slow holds only its
 * own window and cannot starve the other streams. The dialer opens odd ids,
 * the acceptor even ones, as in yamux.
 *
 * Why not a library: `yamux-js` 0.2.0 loses the rest of a frame that spans two
 * socket reads and never ends a stream on FIN (measured: 10 MB over loopback
 * TCP never arrives); `@libp2p/yamux` needs libp2p's connection and stream
 * types (47 packages). The close record differs from yamux's GoAway: it
 * carries the {@link CloseInfo} (code and reason) so a refusal reads the same
 * as over QUIC.
 *
 * @example
 * ```ts
 * import type { Duplex } from "node:stream";
 * declare const socket: Duplex; // connected, e.g. a TLS socket
 * const conn = new MuxConnection(socket, { role: "dialer", transport: "tcp", peer: { hostname: "relay", port: 443 } });
 * const stream = await conn.openStream();
 * ```
 * @module
 */
import type { Duplex } from "node:stream";
import { Buffer } from "node:buffer";
import { CloseCode } from "../wire/protocol.ts";
import type { CloseInfo, TunnelConnection, TunnelStream } from "./types.ts";

/** Bytes a stream's sender may have in flight before the receiver reads them (yamux's initial window). */
export const STREAM_WINDOW = 256 * 1024;
/** Largest data frame, so one stream's big write interleaves with the others'. */
const MAX_FRAME = 16 * 1024;
const HEADER = 12;
/** How long a closing connection may take to flush its close record before the socket is cut. */
const CLOSE_LINGER_MS = 5_000;
const VERSION = 0;
const Type = { data: 0, windowUpdate: 1, close: 3 } as const;
/** Largest body each frame type may have; a window update has none (its length field is the credit). */
const BODY_LIMITS: Record<number, number> = {
  [Type.data]: STREAM_WINDOW,
  [Type.windowUpdate]: 0,
  [Type.close]: 4096,
};
const Flag = { syn: 1, fin: 4, rst: 8 } as const;

interface FrameHead {
  type: number;
  flags: number;
  id: number;
  length: number;
}

function encodeHead(head: FrameHead): Buffer {
  const out = Buffer.alloc(HEADER);
  out.writeUInt8(VERSION, 0);
  out.writeUInt8(head.type, 1);
  out.writeUInt16BE(head.flags, 2);
  out.writeUInt32BE(head.id, 4);
  out.writeUInt32BE(head.length, 8);
  return out;
}

/** One stream's state on this end. */
class MuxStream {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  /** Received, not yet read; bounded by the window we granted. */
  #queue: Uint8Array[] = [];
  #queued = 0;
  #wake?: () => void;
  #remoteDone = false;
  #failure?: Error;
  #discard = false;
  /** Bytes read since the last window update we sent. */
  #consumed = 0;
  #sendCredit = STREAM_WINDOW;
  #creditWaiter?: () => void;
  /** Each half that ended (our FIN sent, theirs received): with both, the mux forgets the stream. */
  #halvesDone = 0;

  constructor(readonly id: number, private readonly mux: MuxConnection) {
    this.readable = new ReadableStream<Uint8Array>({
      pull: (controller) => this.#pull(controller),
      cancel: () => {
        // Like QUIC's STOP_SENDING for our purposes: what still arrives is dropped, credit keeps flowing.
        this.#discard = true;
        this.#grant(this.#queued);
        this.#queue = [];
        this.#queued = 0;
      },
    }, { highWaterMark: 0 });
    this.writable = new WritableStream<Uint8Array>({
      write: (chunk) => this.#write(chunk),
      close: async () => {
        await this.mux.send({ type: Type.data, flags: Flag.fin, id, length: 0 });
        this.#halfDone();
      },
      abort: () => this.mux.reset(id),
    });
  }

  async #pull(controller: ReadableStreamDefaultController<Uint8Array>) {
    while (this.#queue.length === 0 && !this.#remoteDone && !this.#failure) {
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    const chunk = this.#queue.shift();
    if (chunk) {
      this.#queued -= chunk.length;
      this.#grant(chunk.length);
      return controller.enqueue(chunk);
    }
    if (this.#failure) controller.error(this.#failure);
    else controller.close();
  }

  /** Gives the sender back credit for bytes read, in steps of half a window to keep updates few. */
  #grant(bytes: number) {
    this.#consumed += bytes;
    if (this.#consumed < STREAM_WINDOW / 2) return;
    this.mux.send({ type: Type.windowUpdate, flags: 0, id: this.id, length: this.#consumed });
    this.#consumed = 0;
  }

  async #write(chunk: Uint8Array) {
    for (let offset = 0; offset < chunk.length;) {
      while (this.#sendCredit === 0 && !this.#failure) {
        await new Promise<void>((resolve) => this.#creditWaiter = resolve);
      }
      if (this.#failure) throw this.#failure;
      const size = Math.min(this.#sendCredit, MAX_FRAME, chunk.length - offset);
      this.#sendCredit -= size;
      await this.mux.send(
        { type: Type.data, flags: 0, id: this.id, length: size },
        chunk.subarray(offset, offset + size),
      );
      offset += size;
    }
  }

  /** Data from the peer; false if it overran the window we granted (a protocol error). */
  received(data: Uint8Array): boolean {
    if (this.#discard) return (this.#grant(data.length), true);
    this.#queued += data.length;
    if (this.#queued > STREAM_WINDOW) return false;
    this.#queue.push(data);
    this.#wakeReader();
    return true;
  }

  credit(bytes: number) {
    this.#sendCredit += bytes;
    this.#creditWaiter?.();
  }

  finished() {
    this.#remoteDone = true;
    this.#wakeReader();
    this.#halfDone();
  }

  #halfDone() {
    if (++this.#halvesDone === 2) this.mux.forget(this.id);
  }

  fail(error: Error) {
    this.#failure ??= error;
    this.#wakeReader();
    this.#creditWaiter?.();
  }

  #wakeReader() {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** A {@link TunnelConnection} multiplexed over one byte stream. */
export class MuxConnection implements TunnelConnection {
  readonly transport: string;
  readonly peer: { hostname: string; port: number };
  readonly alpn?: string;
  readonly incomingStreams: ReadableStream<TunnelStream>;
  readonly closed: Promise<CloseInfo>;
  #streams = new Map<number, MuxStream>();
  #nextId: number;
  #incoming!: ReadableStreamDefaultController<TunnelStream>;
  #settle!: (info: CloseInfo) => void;
  #open = true;
  #pending: Buffer = Buffer.alloc(0);
  /** Writes go out one after the other; each waits for the socket to drain. */
  #writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly socket: Duplex,
    options: {
      role: "dialer" | "acceptor";
      transport: string;
      peer: { hostname: string; port: number };
      alpn?: string;
    },
  ) {
    this.transport = options.transport;
    this.peer = options.peer;
    this.alpn = options.alpn;
    this.#nextId = options.role === "dialer" ? 1 : 2;
    this.incomingStreams = new ReadableStream({ start: (controller) => void (this.#incoming = controller) });
    this.closed = new Promise((resolve) => this.#settle = resolve);
    socket.on("data", (data: Buffer) => this.#receive(data));
    socket.on("error", (error: Error) => this.#end({ code: CloseCode.lost, reason: error.message }));
    socket.on("close", () => this.#end({ code: CloseCode.lost, reason: "connection lost" }));
  }

  openStream(): Promise<TunnelStream | null> {
    if (!this.#open) return Promise.resolve(null);
    const id = this.#nextId;
    this.#nextId += 2;
    const stream = new MuxStream(id, this);
    this.#streams.set(id, stream);
    this.send({ type: Type.windowUpdate, flags: Flag.syn, id, length: 0 });
    return Promise.resolve(stream);
  }

  close(info: CloseInfo): void {
    if (!this.#open) return;
    const reason = Buffer.from(info.reason).subarray(0, BODY_LIMITS[Type.close] - 4);
    const payload = Buffer.alloc(4 + reason.length);
    payload.writeUInt32BE(info.code >>> 0, 0);
    reason.copy(payload, 4);
    const record = Buffer.concat([
      encodeHead({ type: Type.close, flags: 0, id: 0, length: payload.length }),
      payload,
    ]);
    // The close record goes out after what was queued before it; end() flushes it, then the socket closes,
    // unless the peer stopped reading: then it is cut after a while.
    this.#writing = this.#writing.then(() => void this.socket.end(record));
    const linger = setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS);
    this.socket.once("close", () => clearTimeout(linger));
    this.#end(info, false);
  }

  /** Queues one frame; resolves once the socket took it. */
  send(head: FrameHead, body?: Uint8Array): Promise<void> {
    const frame = body ? Buffer.concat([encodeHead(head), body]) : encodeHead(head);
    this.#writing = this.#writing.then(() => this.#writeFrame(frame));
    return this.#writing;
  }

  forget(id: number) {
    this.#streams.delete(id);
  }

  reset(id: number) {
    this.#streams.get(id)?.fail(new Error("stream reset"));
    this.#streams.delete(id);
    return this.send({ type: Type.windowUpdate, flags: Flag.rst, id, length: 0 });
  }

  #writeFrame(frame: Buffer): Promise<void> {
    if (!this.#open || this.socket.writableEnded) return Promise.resolve();
    if (this.socket.write(frame)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => (this.socket.off("drain", done), this.socket.off("close", done), resolve());
      this.socket.on("drain", done);
      this.socket.on("close", done);
    });
  }

  #receive(data: Buffer) {
    this.#pending = this.#pending.length ? Buffer.concat([this.#pending, data]) : data;
    while (this.#pending.length >= HEADER && this.#open) {
      const head = {
        type: this.#pending.readUInt8(1),
        flags: this.#pending.readUInt16BE(2),
        id: this.#pending.readUInt32BE(4),
        length: this.#pending.readUInt32BE(8),
      };
      const bodyLength = head.type === Type.windowUpdate ? 0 : head.length;
      const wrong = this.#pending.readUInt8(0) !== VERSION || !(head.type in BODY_LIMITS) ||
        bodyLength > BODY_LIMITS[head.type];
      // Checked on the head alone: a peer cannot make this end buffer a frame it would refuse anyway.
      if (wrong) return this.close({ code: CloseCode.protocolError, reason: "bad multiplexer frame" });
      if (this.#pending.length < HEADER + bodyLength) return;
      const body = this.#pending.subarray(HEADER, HEADER + bodyLength);
      this.#pending = this.#pending.subarray(HEADER + bodyLength);
      this.#frame(head, body);
    }
  }

  #frame(head: FrameHead, body: Buffer) {
    if (head.type === Type.close) {
      const code = body.length >= 4 ? body.readUInt32BE(0) : CloseCode.protocolError;
      return this.#end({ code, reason: body.subarray(4).toString() });
    }
    if (head.flags & Flag.syn) this.#accept(head.id);
    const stream = this.#streams.get(head.id);
    // Frames for a stream we reset are late and harmless.
    if (!stream) return;
    if (head.type === Type.windowUpdate && head.length) stream.credit(head.length);
    if (head.type === Type.data && body.length && !stream.received(new Uint8Array(body))) {
      return this.close({ code: CloseCode.protocolError, reason: `stream ${head.id} overran its window` });
    }
    if (head.flags & Flag.fin) stream.finished();
    if (head.flags & Flag.rst) {
      stream.fail(new Error("stream reset by peer"));
      this.#streams.delete(head.id);
    }
  }

  #accept(id: number) {
    if (!this.#open || this.#streams.has(id)) return;
    const stream = new MuxStream(id, this);
    this.#streams.set(id, stream);
    this.#incoming.enqueue(stream);
  }

  #end(info: CloseInfo, destroy = true) {
    if (!this.#open) return;
    this.#open = false;
    const gone = new Error(`connection closed: ${info.reason}`);
    for (const stream of this.#streams.values()) stream.fail(gone);
    this.#streams.clear();
    this.#incoming.close();
    if (destroy) this.socket.destroy();
    this.#settle(info);
  }
}
