/**
 * The only code that turns frames into bytes and back.
 *
 * A frame is `[version u8][type u8][length u32 BE][payload]`. The payload is
 * JSON (UTF-8), except for `ws-data`: `[flags u8][message bytes]`, flags bit 0
 * = binary, bit 1 = final piece.
 * Decoders reject truncated, oversized, unknown-version, unknown-type and
 * malformed input with a {@link FrameError}; nothing is buffered past
 * {@link MAX_FRAME_BYTES}.
 *
 * After a request or response head comes its body as length-prefixed pieces,
 * `[length u32 BE][bytes]`, ended by an empty piece, or cut short by a piece
 * of length 0xFFFFFFFF. Both markers travel in band because Deno's QUIC does
 * not reliably show a peer's stream reset to the reader: it may look like a
 * clean end, or like nothing at all. {@link writeBodyPiece},
 * {@link writeBodyEnd} and {@link writeBodyAbort} write a body,
 * {@link FrameReader.body} reads one. A TCP tunnel's stream carries one
 * body each way.
 *
 * @example
 * ```ts
 * const bytes = encodeFrame({ type: "ping", seq: 1 });
 * const { frame } = decodeFrame(bytes)!; // { type: "ping", seq: 1 }
 * ```
 * @module
 */
import {
  type Frame,
  FRAME_TYPE_IDS,
  type FrameOf,
  JsonFrameSchema,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  type WsDataFrame,
} from "./protocol.ts";

function wsPayload(frame: WsDataFrame): Uint8Array {
  const payload = new Uint8Array(1 + frame.data.length);
  payload[0] = (frame.binary ? 1 : 0) | (frame.final ? 2 : 0);
  payload.set(frame.data, 1);
  return payload;
}

/** Callbacks for {@link FrameReader.body}. */
export interface BodyHooks {
  /** Runs when the consumer cancels the body (to stop the other direction too). */
  onCancel?: (reason: unknown) => void;
  /** Runs once when the body ends in any way: whole, failed or cancelled; `whole` says which. */
  onEnd?: (whole: boolean) => void;
  /** The stream carries more after this body (a lane: the next exchange follows); else it must end with it. */
  more?: boolean;
}

/** Bytes before the payload: version, type, length. */
const FRAME_HEADER_BYTES = 6;

export type FrameErrorKind =
  | "truncated"
  | "oversized"
  | "bad_version"
  | "unknown_type"
  | "malformed"
  | "unexpected";

/** Any input the decoder will not accept. */
export class FrameError extends Error {
  constructor(readonly kind: FrameErrorKind, message: string) {
    super(message);
    this.name = "FrameError";
  }
}

const TYPE_BY_ID = new Map(Object.entries(FRAME_TYPE_IDS).map(([type, id]) => [id, type]));
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Encodes one frame; throws `FrameError("oversized")` past the cap. */
export function encodeFrame(frame: Frame): Uint8Array {
  const payload = frame.type === "ws-data" ? wsPayload(frame) : encoder.encode(JSON.stringify(frame));
  return framed(PROTOCOL_VERSION, FRAME_TYPE_IDS[frame.type], payload, frame.type);
}

/**
 * An `error` frame (`bad_version`) as a client of protocol `version` reads it. The header and the error
 * frame's shape have not changed since version 2, so an older client shows the message and stops.
 */
export function encodeLegacyError(version: number, message: string): Uint8Array {
  const payload = encoder.encode(JSON.stringify({ type: "error", code: "bad_version", message }));
  return framed(version, FRAME_TYPE_IDS.error, payload, "error");
}

function framed(version: number, typeId: number, payload: Uint8Array, type: string): Uint8Array {
  if (payload.length > MAX_FRAME_BYTES) {
    throw new FrameError("oversized", `${type} frame is ${payload.length} bytes, over the cap`);
  }
  const bytes = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
  const view = new DataView(bytes.buffer);
  view.setUint8(0, version);
  view.setUint8(1, typeId);
  view.setUint32(2, payload.length);
  bytes.set(payload, FRAME_HEADER_BYTES);
  return bytes;
}

/**
 * Decodes the frame at the start of `bytes`. Returns `null` when more bytes are
 * needed, else the frame and how many bytes it used. Throws `FrameError` as soon
 * as the header alone proves the input bad, before waiting for a payload.
 */
export function decodeFrame(bytes: Uint8Array): { frame: Frame; size: number } | null {
  if (bytes.length < FRAME_HEADER_BYTES) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint8(0);
  if (version !== PROTOCOL_VERSION) {
    throw new FrameError("bad_version", `frame version ${version}, expected ${PROTOCOL_VERSION}`);
  }
  const type = TYPE_BY_ID.get(view.getUint8(1));
  if (!type) throw new FrameError("unknown_type", `unknown frame type ${view.getUint8(1)}`);
  const length = view.getUint32(2);
  if (length > MAX_FRAME_BYTES) {
    throw new FrameError(
      "oversized",
      `frame of ${length} bytes is over the ${MAX_FRAME_BYTES} cap`,
    );
  }
  const size = FRAME_HEADER_BYTES + length;
  if (bytes.length < size) return null;
  if (type === "ws-data") {
    if (length < 1 || bytes[FRAME_HEADER_BYTES] > 3) {
      throw new FrameError("malformed", "ws-data frame has bad flags");
    }
    const flags = bytes[FRAME_HEADER_BYTES];
    const data = bytes.slice(FRAME_HEADER_BYTES + 1, size);
    return { frame: { type, binary: (flags & 1) === 1, final: (flags & 2) === 2, data }, size };
  }
  let json: unknown;
  try {
    json = JSON.parse(decoder.decode(bytes.subarray(FRAME_HEADER_BYTES, size)));
  } catch {
    throw new FrameError("malformed", `${type} frame payload is not UTF-8 JSON`);
  }
  const parsed = JsonFrameSchema.safeParse(json);
  if (!parsed.success || parsed.data.type !== type) {
    throw new FrameError("malformed", `${type} frame payload has the wrong shape`);
  }
  return { frame: parsed.data, size };
}

/** One piece of a body, as bytes to write; empty for no bytes (an empty piece would end the body). */
export function encodeBodyPiece(bytes: Uint8Array): Uint8Array {
  if (bytes.length === 0) return bytes;
  const piece = new Uint8Array(BODY_PREFIX_BYTES + bytes.length);
  new DataView(piece.buffer).setUint32(0, bytes.length);
  piece.set(bytes, BODY_PREFIX_BYTES);
  return piece;
}

/** The end marker, as bytes to write: the body is whole. */
export function encodeBodyEnd(): Uint8Array {
  return new Uint8Array(BODY_PREFIX_BYTES);
}

/** Writes one piece of a body. Empty pieces are skipped: an empty piece ends the body. */
export function writeBodyPiece(
  writer: WritableStreamDefaultWriter<Uint8Array>,
  bytes: Uint8Array,
): Promise<void> {
  return bytes.length === 0 ? Promise.resolve() : writer.write(encodeBodyPiece(bytes));
}

/** Marks the body whole. */
export function writeBodyEnd(writer: WritableStreamDefaultWriter<Uint8Array>): Promise<void> {
  return writer.write(encodeBodyEnd());
}

/**
 * Writes `parts` (frames, body pieces, the end marker) as one write: each write is a trip through the
 * transport, and a small exchange fits in one.
 */
export function writeTogether(
  writer: WritableStreamDefaultWriter<Uint8Array>,
  parts: Uint8Array[],
): Promise<void> {
  let size = 0;
  for (const part of parts) size += part.length;
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const part of parts) (bytes.set(part, at), at += part.length);
  return writer.write(bytes);
}

/** Marks the body cut short, then closes the stream: the reader's body errors instead of ending. */
export async function writeBodyAbort(writer: WritableStreamDefaultWriter<Uint8Array>): Promise<void> {
  await writer.write(new Uint8Array([0xff, 0xff, 0xff, 0xff]));
  await writer.close();
}

const BODY_PREFIX_BYTES = 4;
const BODY_ABORTED = 0xffffffff;

/** The sender of a body cut it short: its origin or visitor went away mid-body. */
class BodyAbortedError extends Error {
  constructor() {
    super("the body was cut short by its sender");
    this.name = "BodyAbortedError";
  }
}

/**
 * Reads frames from a byte stream, then (optionally) hands the remaining bytes
 * on as a stream of their own.
 */
export class FrameReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #pending: Uint8Array = new Uint8Array(0);
  #done = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** Next frame, or `null` on a clean end of stream between frames. */
  async read(): Promise<Frame | null> {
    while (true) {
      const decoded = decodeFrame(this.#pending);
      if (decoded) {
        this.#pending = this.#pending.subarray(decoded.size);
        return decoded.frame;
      }
      if (this.#done || !(await this.#fill())) {
        if (this.#pending.length === 0) return null;
        throw new FrameError("truncated", "stream ended inside a frame");
      }
    }
  }

  /** Next frame, which must exist and be one of `types`. */
  async expect<T extends Frame["type"]>(...types: T[]): Promise<FrameOf<T>> {
    const frame = await this.read();
    if (!frame) throw new FrameError("truncated", `stream ended, expected ${types.join(" or ")}`);
    if (!types.includes(frame.type as T)) {
      throw new FrameError("unexpected", `got ${frame.type}, expected ${types.join(" or ")}`);
    }
    return frame as FrameOf<T>;
  }

  /**
   * The body after the last frame read, as a stream of its bytes; it errors
   * with a `truncated` {@link FrameError} if the stream ends before the body's
   * end marker, and with a `BodyAbortedError` if the sender cut it
   * short.
   */
  body(hooks: BodyHooks = {}): ReadableStream<Uint8Array> {
    let left = 0;
    let ended = false;
    const end = (whole: boolean) => {
      if (!ended) (ended = true, hooks.onEnd?.(whole));
    };
    const fill = async (wanted: number) => {
      while (this.#pending.length < wanted) {
        if (this.#done || !(await this.#fill())) {
          throw new FrameError("truncated", "stream ended inside a body");
        }
      }
    };
    const take = (size: number) => {
      const bytes = this.#pending.subarray(0, size);
      this.#pending = this.#pending.subarray(size);
      return bytes;
    };
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        try {
          while (left === 0) {
            await fill(BODY_PREFIX_BYTES);
            const prefix = take(BODY_PREFIX_BYTES);
            left = new DataView(prefix.buffer, prefix.byteOffset, BODY_PREFIX_BYTES).getUint32(0);
            if (left === BODY_ABORTED) throw new BodyAbortedError();
            if (left > 0) continue;
            // The end marker. On a lane the next exchange's frame may follow; else the stream must end here.
            if (!hooks.more) await this.#expectEnd();
            end(true);
            return controller.close();
          }
          await fill(1);
          const bytes = take(Math.min(left, this.#pending.length));
          left -= bytes.length;
          controller.enqueue(bytes);
        } catch (error) {
          end(false);
          controller.error(error);
        }
      },
      cancel: (reason) => {
        end(false);
        hooks.onCancel?.(reason);
        return this.#reader.cancel(reason);
      },
    }, { highWaterMark: 0 });
  }

  /** Waits for the stream's end, which must come next: a body that is a stream's last thing is followed by nothing. */
  async #expectEnd() {
    while (this.#pending.length === 0 && !this.#done) await this.#fill();
    if (this.#pending.length > 0) throw new FrameError("malformed", "bytes after the end of a body");
  }

  /** Stops reading: tells the sender to stop (QUIC STOP_SENDING). */
  cancel(reason?: unknown): Promise<void> {
    return this.#reader.cancel(reason).catch(() => {
      // The stream failed already: the sender has nothing left to be told.
    });
  }

  async #fill(): Promise<boolean> {
    const { value, done } = await this.#reader.read();
    if (done) {
      this.#done = true;
      return false;
    }
    this.#pending = this.#pending.length === 0 ? value : concat(this.#pending, value);
    return true;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
