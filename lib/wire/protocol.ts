/**
 * The reverprox wire protocol: every frame the relay and the client exchange,
 * with its meaning, and the limits both sides hold. Only `codec.ts` turns these
 * into bytes.
 *
 * One connection per client process (QUIC, or another transport behind
 * `lib/transport/`). The client opens the control stream first (`hello` →
 * `welcome` | `error`, then `ping`/`pong` both ways, `goodbye` to leave). The
 * relay opens one bidirectional stream per public request (`request` head,
 * body; the client answers `response` head, body) or per public TCP connection
 * (`tcp-open`, then each direction's bytes as a body). Bodies are
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
import { VERSION } from "../shared/version.ts";

/** Bumped on any incompatible change; also the ALPN suffix. */
export const PROTOCOL_VERSION = 3;
/** What both programs' `--version` prints: the release, the protocol it speaks, and the Deno it runs on. */
export function versionLine(program: string): string {
  return `${program} ${VERSION} (protocol ${PROTOCOL_VERSION}, Deno ${Deno.version.deno})`;
}
/** ALPN protocol id, so both ends know the version before the first frame. */
export const ALPN = `reverprox/${PROTOCOL_VERSION}`;
/**
 * ALPN ids of older clients the relay still lets in, only to tell them, in their own framing, to upgrade
 * (`codec.ts`'s `encodeLegacyError`): a client left on a TLS handshake failure would not know why.
 */
export const LEGACY_ALPNS = ["reverprox/2"];
/** Hard cap on one frame's payload, so a peer cannot make us buffer without bound. */
export const MAX_FRAME_BYTES = 256 * 1024;
/** Most tunnels one client connection may hold. */
const MAX_TUNNELS_PER_CLIENT = 1000;

/**
 * Stable error codes carried by `error` frames; scripts may match on them. Each is sent by a relay or a
 * client of this protocol version; a decoder refuses any other, so a new code needs a version bump.
 */
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
  "unknown_tunnel",
  "internal",
] as const;
export type ErrorCode = typeof ERROR_CODES[number];

const header = z.tuple([z.string().max(8192), z.string().max(65536)]);
const tunnelKind = z.enum(["http", "tcp"]);

/** Who may use an http tunnel, checked at the relay. */
const TunnelAccessSchema = z.object({
  /** CIDRs or addresses allowed; empty = everyone not denied. */
  allow: z.array(z.string().max(64)).max(256).optional(),
  deny: z.array(z.string().max(64)).max(256).optional(),
  basicAuth: z.object({ username: z.string().max(256), passwordSha256: z.string().length(64) }).optional(),
});
export type TunnelAccess = z.infer<typeof TunnelAccessSchema>;

/** What a client asks for, one per tunnel. */
const TunnelRequestSchema = z.object({
  kind: tunnelKind,
  /** DNS label, required for http tunnels (the client picks a random readable one when its user did not). */
  name: z.string().max(63).optional(),
  /** Public port for tcp tunnels; absent = the relay picks one. */
  remotePort: z.number().int().min(1).max(65535).optional(),
  access: TunnelAccessSchema.optional(),
  /** Held paused: the name and URL are kept, visitors get a "paused" page and nothing reaches the client. */
  suspended: z.boolean().optional(),
  /**
   * Attach to the http tunnel `name` that another client holds, as its debug receiver: only requests
   * marked with the granted `debugId` come here. Needs a token with the `debug` permission.
   */
  debug: z.boolean().optional(),
});
export type TunnelRequest = z.infer<typeof TunnelRequestSchema>;

/** A tunnel on a live connection, as the relay routes it: `http` and its name, or `tcp` and its port. */
const TunnelRouteSchema = z.object({ kind: tunnelKind, name: z.string().max(63) });
export type TunnelRoute = z.infer<typeof TunnelRouteSchema>;

/** What the relay granted for one requested tunnel. */
const TunnelGrantSchema = z.object({
  kind: tunnelKind,
  name: z.string(),
  url: z.string(),
  remotePort: z.number().int().optional(),
  /** For a debug receiver: the id that marks requests for it (`X-Reverprox-Debug` or its cookie). */
  debugId: z.string().optional(),
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
    /**
     * Random per agent process: a newer connection with the same one is that process moving to a better
     * transport (the old connection finishes what it carries); another one is a restart (the old is cut).
     */
    instance: z.string().max(128).optional(),
    tunnels: z.array(TunnelRequestSchema).max(MAX_TUNNELS_PER_CLIENT),
    /**
     * Streams that survive the link (`transport/resumable.ts`) on this connection; with the `token` of an
     * earlier `welcome`, carry that connection's streams on here instead of starting afresh.
     */
    resume: z.object({ token: z.string().max(128).optional() }).optional(),
  }),
  /** Relay → client: accepted; the public address of each tunnel, in request order. */
  z.object({
    type: z.literal("welcome"),
    sessionId: z.string(),
    tunnels: z.array(TunnelGrantSchema),
    heartbeatMs: z.number().int().positive(),
    /** With `hello.resume`: what to say in the next hello to resume this connection's streams. */
    resumeToken: z.string().optional(),
    /** The streams of the connection `hello.resume.token` named go on here; `tunnels` is then empty. */
    resumed: z.boolean().optional(),
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
  /** Relay → client, first frame of a request stream; the request body follows as a body (`codec.ts`). */
  z.object({
    type: z.literal("request"),
    tunnel: z.string(),
    method: z.string().max(64),
    target: z.string(),
    headers: z.array(header),
    remoteAddr: z.string().max(128),
    /** When the relay had the request head, ms since the epoch: the inspector's timing at the relay. */
    relayAt: z.number().optional(),
    /** Set when the visitor asked for a WebSocket; the answer is then a 101 and messages follow. */
    upgrade: z.literal("websocket").optional(),
  }),
  /** Client → relay, first frame of the answer; the response body follows as a body (`codec.ts`). */
  z.object({
    type: z.literal("response"),
    status: z.number().int().min(100).max(599),
    headers: z.array(header),
  }),
  /** Relay → client, first frame of a public TCP connection; each direction's bytes follow as a body. */
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
  /**
   * Client → relay on the control stream: change the tunnels of the live connection (add one, remove
   * one, suspend or resume one). The relay answers `tunnel-ack` with the same `id`.
   */
  z.discriminatedUnion("op", [
    z.object({
      type: z.literal("tunnel-update"),
      id: z.number().int(),
      op: z.literal("add"),
      tunnel: TunnelRequestSchema,
    }),
    z.object({
      type: z.literal("tunnel-update"),
      id: z.number().int(),
      op: z.enum(["remove", "suspend", "resume"]),
      route: TunnelRouteSchema,
    }),
  ]),
  /** Relay → client: the outcome of the `tunnel-update` with this `id`: the grant (for add), or why not. */
  z.object({
    type: z.literal("tunnel-ack"),
    id: z.number().int(),
    grant: TunnelGrantSchema.optional(),
    error: z.object({ code: z.enum(ERROR_CODES), message: z.string().max(4096) }).optional(),
  }),
  /**
   * Client → relay: whether a tunnel's origin answers its probes. While it does not, the relay answers
   * visitors at once (502 with when it went down) without crossing the tunnel.
   */
  z.object({
    type: z.literal("origin-health"),
    route: TunnelRouteSchema,
    up: z.boolean(),
    /** Since when, in ms since the epoch. */
    since: z.number(),
    message: z.string().max(1024).optional(),
  }),
]);
type JsonFrame = z.infer<typeof JsonFrameSchema>;

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
  "tunnel-update": 12,
  "tunnel-ack": 13,
  "origin-health": 14,
};

/** Largest piece of a WebSocket message in one `ws-data` frame. */
export const MAX_WS_CHUNK_BYTES = 64 * 1024;

/** Close codes of a client connection; the close reason says more. */
export const CloseCode = {
  normal: 0,
  refused: 1,
  heartbeatMissed: 2,
  replaced: 3,
  shuttingDown: 4,
  protocolError: 5,
  /** Never sent: the connection ended without a close from either end (cut, reset, timed out). */
  lost: -1,
} as const;

/**
 * What a relay serves at `/.well-known/reverprox.json` on its QUIC port number over TCP: what a client
 * needs to decide to trust it before its first handshake.
 */
export const RelayInfoSchema = z.object({
  relay: z.literal("reverprox"),
  protocol: z.number(),
  domain: z.string(),
  fingerprint: z.string(),
  caCert: z.string(),
});
export type RelayInfo = z.infer<typeof RelayInfoSchema>;

/** An `error` frame turned into an exception, for code paths that throw. */
export class ProtocolError extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}
