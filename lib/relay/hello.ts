/**
 * The first moments of a client connection at the relay: its control stream
 * and `hello` within the hello timeout, who it is (token and client id), and,
 * when it must be turned away, an `error` frame it can read before the
 * connection closes.
 *
 * @example
 * ```ts
 * import type { TunnelConnection } from "../transport/types.ts";
 * declare const conn: TunnelConnection;
 * let control: WritableStreamDefaultWriter<Uint8Array> | undefined;
 * try {
 *   const opening = await readHello(conn, 10_000, (stream) => control = stream);
 *   // On an open relay: { record: null, ownerKey }.
 *   if (opening) authenticate(opening.hello, { tokenHashes: null });
 * } catch (error) {
 *   await refuse(conn, control, asRefusal(error)); // an `error` frame, then the close
 * }
 * ```
 * @module
 */
import { encodeFrame, encodeLegacyError, FrameError, FrameReader } from "../wire/codec.ts";
import {
  CloseCode,
  type ErrorCode,
  type FrameOf,
  PROTOCOL_VERSION,
  ProtocolError,
} from "../wire/protocol.ts";
import type { TunnelConnection } from "../transport/types.ts";
import { TimeoutError, withTimeout } from "../shared/async.ts";
import { sha256Hex } from "../shared/hash.ts";
import type { TokenRecord, TokenStore } from "./state/token_store.ts";

/** A client's opening: its hello, and the control stream it came on. */
export interface Opening {
  hello: FrameOf<"hello">;
  reader: FrameReader;
  control: WritableStreamDefaultWriter<Uint8Array>;
}

/**
 * Waits for the client's first stream and its `hello`, each within `timeoutMs`; null when the connection
 * ends first. Rejects with a `TimeoutError`, a `FrameError`, or a `ProtocolError` for another protocol
 * version; `control` is handed to `onControl` as soon as the stream is there, so a refusal can still be
 * written on it.
 */
export async function readHello(
  conn: TunnelConnection,
  timeoutMs: number,
  onControl: (control: WritableStreamDefaultWriter<Uint8Array>) => void,
): Promise<Opening | null> {
  const incoming = conn.incomingStreams.getReader();
  const first = await withTimeout(incoming.read(), timeoutMs, "control stream");
  incoming.releaseLock();
  if (first.done) return null;
  const reader = new FrameReader(first.value.readable);
  const control = first.value.writable.getWriter();
  onControl(control);
  const hello = await withTimeout(reader.expect("hello"), timeoutMs, "hello");
  if (hello.version !== PROTOCOL_VERSION) {
    throw new ProtocolError(
      "bad_version",
      `relay speaks protocol ${PROTOCOL_VERSION}, client ${hello.version}`,
    );
  }
  return { hello, reader, control };
}

/** Tokens the relay accepts: hashes given by flag or file, and the store's. */
export interface TokenSources {
  tokenHashes: Set<string> | null;
  tokenStore?: TokenStore;
}

/**
 * Who the client is: its store token (if it used one) and its owner key, the hash of its token and
 * client id that its names are held under. Throws `unauthorized` when the relay is closed to it.
 */
export function authenticate(
  hello: FrameOf<"hello">,
  sources: TokenSources,
): { record: TokenRecord | null; ownerKey: string } {
  const record = verifyToken(hello.token, sources);
  const ownerKey = sha256Hex(`${hello.token ?? ""}\n${hello.clientId ?? crypto.randomUUID()}`);
  return { record, ownerKey };
}

/**
 * The store's record of `token` (null for a flag or file token, or on an open relay); throws
 * `unauthorized` when the relay is closed to it. Used by `hello` and by long-polling's `/auth`.
 */
export function verifyToken(token: string | undefined, sources: TokenSources): TokenRecord | null {
  const { tokenHashes, tokenStore } = sources;
  const record = token ? tokenStore?.verify(token) ?? null : null;
  const closed = tokenHashes !== null || (tokenStore?.hasTokens() ?? false);
  if (closed && !record && !(token && tokenHashes?.has(sha256Hex(token)))) {
    throw new ProtocolError("unauthorized", token ? "the token is not valid" : "this relay needs a token");
  }
  return record;
}

/** The `error` frame for whatever stopped a client's opening. */
export function asRefusal(error: unknown): { code: ErrorCode; message: string } {
  if (error instanceof ProtocolError) return { code: error.code, message: error.message };
  if (error instanceof FrameError) return { code: "bad_frame", message: error.message };
  if (error instanceof TimeoutError) return { code: "bad_frame", message: "no hello in time" };
  return { code: "internal", message: error instanceof Error ? error.message : String(error) };
}

/** How long a refused client gets to read its `error` and hang up before the relay closes on it. */
const REFUSAL_GRACE_MS = 1_000;

/** Tells the client why it is refused (when it got as far as a control stream), then closes. */
export async function refuse(
  conn: TunnelConnection,
  control: WritableStreamDefaultWriter<Uint8Array> | undefined,
  refusal: { code: ErrorCode; message: string },
): Promise<void> {
  try {
    await control?.write(encodeFrame({ type: "error", ...refusal }));
    await control?.close();
    // Letting the client hang up first keeps the frame from being lost to our close.
    await withTimeout(conn.closed, REFUSAL_GRACE_MS);
  } catch {
    // The client is gone already, or took too long to read: the close below says the same in its reason.
  }
  conn.close({ code: CloseCode.refused, reason: `${refusal.code}: ${refusal.message}` });
  await conn.closed;
}

/**
 * Turns away a client of an older protocol (it agreed on a legacy ALPN): its first stream gets a
 * `bad_version` error in its own framing, saying to upgrade, then the connection closes.
 */
export async function refuseLegacy(conn: TunnelConnection, alpn: string): Promise<void> {
  const message = `this relay speaks protocol ${PROTOCOL_VERSION}, your reverprox ${alpn}; upgrade reverprox`;
  const version = Number(alpn.split("/")[1]);
  const incoming = conn.incomingStreams.getReader();
  const first = await withTimeout(incoming.read(), REFUSAL_GRACE_MS, "control stream").catch(() => undefined);
  incoming.releaseLock();
  if (first && !first.done) {
    const writer = first.value.writable.getWriter();
    await writer.write(encodeLegacyError(version, message)).then(() => writer.close()).catch(() => {
      // The old client is gone already; the close reason below says the same.
    });
    await withTimeout(conn.closed, REFUSAL_GRACE_MS).catch(() => {
      // It did not hang up in time: closed on below.
    });
  }
  conn.close({ code: CloseCode.refused, reason: `bad_version: ${message}` });
  await conn.closed;
}
