/**
 * The reverprox wire protocol: every frame the relay and the client exchange,
 * with its meaning, and the limits both sides hold. Only `codec.ts` turns these
 * into bytes.
 *
 * One QUIC connection per client process. The client opens the control stream
 * first (`hello` → `welcome` | `error`, then `ping`/`pong` both ways, `goodbye`
 * to leave). The relay opens one bidirectional stream per public request
 * (`request` head, body; the client answers `response` head, body) or per
 * public TCP connection (`tcp-open`, then raw bytes both ways). Bodies are
 * length-prefixed pieces with an end or abort marker (see `codec.ts`). A
 * WebSocket is a `request` with `upgrade: "websocket"` answered by a 101
 * `response`, then `ws-data` and `ws-close` frames both ways.
 *
 * @example
 * ```ts
 * const hello: Frame = { type: "hello", version: PROTOCOL_VERSION, tunnels: [{ kind: "http", name: "api" }] };
 * ```
 * @module
 */
import { z } from "zod";

/** Bumped on any incompatible change; also the ALPN suffix. */
export const PROTOCOL_VERSION = 2;
/** ALPN protocol id: a relay and client of different versions fail the TLS handshake cleanly. */
export const ALPN = `reverprox/${PROTOCOL_VERSION}`;
/** Hard cap on one frame's payload, so a peer cannot make us buffer without bound. */
export const MAX_FRAME_BYTES = 256 * 1024;
/** Most tunnels one client connection may hold. */
export const MAX_TUNNELS_PER_CLIENT = 1000;

/** Stable error codes carried by `error` frames; scripts may match on them. */
export const ERROR_CODES = [
  "bad_version",
  "bad_frame",
  "unauthorized",
  "not_permitted",
  "name_invalid",
  "name_taken",
  "too_many_tunnels",
  "port_unavailable",
  "origin_refused",
  "origin_timeout",
  "origin_error",
  "upgrade_refused",
  "internal",
] as const;
export type ErrorCode = typeof ERROR_CODES[number];

const header = z.tuple([z.string().max(8192), z.string().max(65536)]);
const tunnelKind = z.enum(["http", "tcp"]);

/** Who may use an http tunnel, checked at the relay. */
export const TunnelAccessSchema = z.object({
  /** CIDRs or addresses allowed; empty = everyone not denied. */
  allow: z.array(z.string().max(64)).max(256).optional(),
  deny: z.array(z.string().max(64)).max(256).optional(),
  basicAuth: z.object({ username: z.string().max(256), passwordSha256: z.string().length(64) }).optional(),
});
export type TunnelAccess = z.infer<typeof TunnelAccessSchema>;

/** What a client asks for, one per tunnel. */
export const TunnelRequestSchema = z.object({
  kind: tunnelKind,
  /** DNS label for http tunnels; absent = the relay picks a random readable one. */
  name: z.string().max(63).optional(),
  /** Public port for tcp tunnels; absent = the relay picks one. */
  remotePort: z.number().int().min(1).max(65535).optional(),
  access: TunnelAccessSchema.optional(),
});
export type TunnelRequest = z.infer<typeof TunnelRequestSchema>;

/** What the relay granted for one requested tunnel. */
export const TunnelGrantSchema = z.object({
  kind: tunnelKind,
  name: z.string(),
  url: z.string(),
  remotePort: z.number().int().optional(),
});
export type TunnelGrant = z.infer<typeof TunnelGrantSchema>;

/** Every frame with a JSON payload, keyed by `type`. */
export const JsonFrameSchema = z.discriminatedUnion("type", [
  /** Client → relay, first frame on the control stream: who I am and what I want. */
  z.object({
    type: z.literal("hello"),
    version: z.number().int(),
    token: z.string().max(4096).optional(),
    /** Stable per-install secret; lets a restarted client reclaim its names within the grace period. */
    clientId: z.string().min(16).max(128).optional(),
    tunnels: z.array(TunnelRequestSchema).min(1).max(MAX_TUNNELS_PER_CLIENT),
  }),
  /** Relay → client: accepted; the public address of each tunnel, in request order. */
  z.object({
    type: z.literal("welcome"),
    sessionId: z.string(),
    tunnels: z.array(TunnelGrantSchema),
    heartbeatMs: z.number().int().positive(),
  }),
  /** Either way: refusal or failure, with a stable code and a message for humans. */
  z.object({
    type: z.literal("error"),
    code: z.enum(ERROR_CODES),
    message: z.string().max(4096),
  }),
  /** Either way on the control stream: liveness probe. */
  z.object({ type: z.literal("ping"), seq: z.number().int() }),
  /** Answer to `ping` with the same `seq`. */
  z.object({ type: z.literal("pong"), seq: z.number().int() }),
  /** Client → relay: leaving on purpose; free my names now. */
  z.object({ type: z.literal("goodbye"), reason: z.string().max(1024) }),
  /** Relay → client, first frame of a request stream; the request body follows as raw bytes. */
  z.object({
    type: z.literal("request"),
    tunnel: z.string(),
    method: z.string().max(64),
    target: z.string(),
    headers: z.array(header),
    remoteAddr: z.string().max(128),
    /** Set when the visitor asked for a WebSocket; the answer is then a 101 and messages follow. */
    upgrade: z.literal("websocket").optional(),
  }),
  /** Client → relay, first frame of the answer; the response body follows as raw bytes. */
  z.object({
    type: z.literal("response"),
    status: z.number().int().min(100).max(599),
    headers: z.array(header),
  }),
  /** Relay → client, first frame of a public TCP connection; raw bytes follow both ways. */
  z.object({
    type: z.literal("tcp-open"),
    tunnel: z.string(),
    remoteAddr: z.string().max(128),
  }),
  /** Either way on a WebSocket stream: that side closed with this code and reason. */
  z.object({
    type: z.literal("ws-close"),
    code: z.number().int().min(1000).max(4999),
    reason: z.string().max(123),
  }),
]);
export type JsonFrame = z.infer<typeof JsonFrameSchema>;

/**
 * Either way on a WebSocket stream: one piece of a message, raw bytes on the
 * wire (no JSON). A message longer than one frame is split; `final` marks its
 * last piece.
 */
export interface WsDataFrame {
  type: "ws-data";
  binary: boolean;
  final: boolean;
  data: Uint8Array;
}

export type Frame = JsonFrame | WsDataFrame;
export type FrameOf<T extends Frame["type"]> = Extract<Frame, { type: T }>;

/** Wire numbers of the frame types; never reuse a number. */
export const FRAME_TYPE_IDS: Record<Frame["type"], number> = {
  hello: 1,
  welcome: 2,
  error: 3,
  ping: 4,
  pong: 5,
  goodbye: 6,
  request: 7,
  response: 8,
  "tcp-open": 9,
  "ws-data": 10,
  "ws-close": 11,
};

/** Largest piece of a WebSocket message in one `ws-data` frame. */
export const MAX_WS_CHUNK_BYTES = 64 * 1024;

/** An `error` frame turned into an exception, for code paths that throw. */
export class ProtocolError extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}
