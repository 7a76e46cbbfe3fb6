/**
 * The agent: one connection to the relay for all its tunnels, every request
 * stream answered from the local origin (`answer.ts`), a reconnect with
 * exponential backoff and jitter whenever the link drops, tunnels added,
 * removed, paused and resumed while it runs, and each origin's health watched
 * and told to the relay. It speaks only in events (`events.ts`): the request
 * log, the control API, the dashboard and the inspector subscribe to them.
 *
 * The story of one connection: {@link ConnectRelay} (trust, handshake) →
 * `hello` → `welcome` (public URLs) → serve request streams, and carry the
 * tunnel changes asked for meanwhile, until the link is lost → back off →
 * again. Refusals that retrying cannot fix (bad token, name taken, changed
 * fingerprint) end the loop with an {@link AgentError}.
 *
 * @example
 * ```ts
 * import { quicRelay } from "./link.ts";
 * import { parseServerUrl } from "./trust.ts";
 * const connect = quicRelay({ relay: parseServerUrl("quic://127.0.0.1:4433"), knownRelaysFile: "/tmp/known_relays" });
 * const agent = new Agent({ connect, clientId: crypto.randomUUID(), tunnels: [] });
 * agent.events.on("online", ({ tunnels }) => console.log(tunnels.map((t) => t.url)));
 * await agent.run(AbortSignal.timeout(60_000));
 * ```
 * @module
 */
import { type FrameOf, PROTOCOL_VERSION, type TunnelRoute } from "../wire/protocol.ts";
import { delay } from "../shared/async.ts";
import { ResumableConnection } from "../transport/resumable.ts";
import type { TunnelStream } from "../transport/types.ts";
import { getLogger } from "../shared/log.ts";
import { answerStream } from "./answer.ts";
import { AgentError, TunnelRefused } from "./errors.ts";
import { AgentEvents, type TunnelStatus } from "./events.ts";
import { type HealthState, OriginHealth } from "./health.ts";
import type { ConnectRelay, RelayLink } from "./link.ts";
import { RelaySession, type TunnelChange } from "./relay_session.ts";
import { Tunnel, type TunnelSpec } from "./tunnels.ts";

const log = getLogger(["reverprox", "client"]);

export interface AgentOptions {
  connect: ConnectRelay;
  token?: string;
  clientId: string;
  tunnels: TunnelSpec[];
  /** How long the origin may take to start answering before the visitor gets 504. */
  originTimeoutMs?: number;
  /**
   * Streams that survive a lost link (`transport/resumable.ts`): kept this long, resumed on the next
   * connection. Off when 0 or left out.
   */
  graceMs?: number;
  /** How often each origin is probed (5 s). */
  healthIntervalMs?: number;
}

/** Where the agent stands with its relay. */
export interface LinkState {
  state: "online" | "reconnecting" | "offline";
  /** When it entered that state, ms since the epoch. */
  since: number;
  /** Why it is not online, when it is not. */
  reason?: string;
  relay?: string;
  transport?: string;
  /** Round-trip time to the relay (heartbeats), ms, while online. */
  rttMs?: number;
}

/** Bounds of the wait before a reconnect: it doubles per failed attempt, with jitter, up to the max. */
const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30_000;
const DEFAULT_HEALTH_INTERVAL_MS = 5_000;

export { AgentError, TunnelRefused };
export type { TunnelSpec };

/** An agent that keeps its tunnels online until stopped. */
export class Agent {
  readonly events = new AgentEvents();
  #tunnels: Tunnel[];
  #session?: RelaySession;
  /** With `graceMs`: the streams that outlive each connection, and the token that resumes them. */
  #resumable?: ResumableConnection;
  #resumeToken?: string;
  /**
   * Removals and pauses made while offline: a relay that resumes the session still holds the tunnels as
   * they were, so they are said again then (a new session's hello carries the tunnels as they are).
   */
  #changedOffline: TunnelChange[] = [];
  #link: LinkState = { state: "reconnecting", since: Date.now(), reason: "connecting" };
  /** This process, to the relay: its connections replace each other gently (see `hello.instance`). */
  readonly #instance = crypto.randomUUID();
  #health: OriginHealth;
  #healthKeys = new WeakMap<Tunnel, string>();

  constructor(readonly options: AgentOptions) {
    this.#tunnels = options.tunnels.map((spec) => new Tunnel(spec));
    this.#health = new OriginHealth(
      options.healthIntervalMs ?? DEFAULT_HEALTH_INTERVAL_MS,
      (key, state, wasUp) => this.#healthChanged(key, state, wasUp),
    );
  }

  /** The tunnels, in the order they were added. */
  get tunnels(): readonly Tunnel[] {
    return this.#tunnels;
  }

  get link(): LinkState {
    return { ...this.#link, rttMs: this.#session?.rttMs };
  }

  /** What the agent knows of a tunnel's origin. */
  healthOf(tunnel: Tunnel): HealthState | undefined {
    return this.#health.state(this.#healthKey(tunnel));
  }

  /** Runs until `signal` aborts (then says goodbye) or the relay refuses for good (throws). */
  async run(signal: AbortSignal): Promise<void> {
    for (const tunnel of this.#tunnels) this.#watch(tunnel);
    let attempt = 0;
    try {
      while (!signal.aborted) {
        const { online, reason } = await this.#connectOnce(signal);
        if (signal.aborted) break;
        attempt = online ? 0 : attempt + 1;
        const backoff = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** attempt) * (0.5 + Math.random());
        log.warn("{reason}; reconnecting in {seconds} s", { reason, seconds: (backoff / 1000).toFixed(1) });
        this.#setLink({ state: "reconnecting", since: Date.now(), reason });
        this.events.emit("reconnecting", { reason, inMs: backoff, attempt });
        await delay(backoff, signal);
      }
      this.#stopped("stopped");
    } catch (error) {
      this.#stopped((error as Error).message);
      throw error;
    }
  }

  /**
   * Adds a tunnel to the running agent: on the live connection when there is one (resolving once the
   * relay granted it; rejecting with {@link TunnelRefused} when it would not), else with the next hello.
   */
  async addTunnel(spec: TunnelSpec): Promise<Tunnel> {
    const tunnel = new Tunnel(spec);
    this.#tunnels.push(tunnel);
    try {
      const ack = await this.#change({ op: "add", tunnel: tunnel.request() });
      if (ack?.grant) tunnel.granted(ack.grant);
    } catch (error) {
      this.#tunnels.splice(this.#tunnels.indexOf(tunnel), 1);
      tunnel.close();
      throw error;
    }
    this.#watch(tunnel);
    this.events.emit("tunnel-added", tunnel.status());
    return tunnel;
  }

  /** Removes a tunnel: the relay frees its name at once, its open connections close. */
  async removeTunnel(tunnel: Tunnel): Promise<void> {
    const route = routeOf(tunnel);
    this.#tunnels.splice(this.#tunnels.indexOf(tunnel), 1);
    this.#health.unwatch(this.#healthKey(tunnel));
    tunnel.close();
    if (route) await this.#change({ op: "remove", route }).catch(ignoreUnknownTunnel);
    this.events.emit("tunnel-removed", { name: tunnel.name });
  }

  /** Pauses or resumes a tunnel; the relay knows before this resolves (when online). */
  async setSuspended(tunnel: Tunnel, suspended: boolean): Promise<void> {
    tunnel.setSuspended(suspended);
    const route = routeOf(tunnel);
    if (route) await this.#change({ op: suspended ? "suspend" : "resume", route });
    this.events.emit("tunnel-state", { name: tunnel.name, suspended });
  }

  /** Sends a change on the live connection; undefined when offline (the next hello carries the tunnels). */
  async #change(change: TunnelChange): Promise<FrameOf<"tunnel-ack"> | undefined> {
    // An add made offline has no grant yet: a resumed session asks for it like any ungranted tunnel.
    if (!this.#session && change.op !== "add") this.#changedOffline.push(change);
    const ack = await this.#session?.update(change);
    if (ack?.error) throw new TunnelRefused(ack.error.code, ack.error.message);
    return ack;
  }

  /**
   * One connection's life: whether it got as far as `welcome`, and why it ended. When its link offers a
   * better transport later, the agent moves: a new session over it, the old one left to finish what it
   * carries (the relay closes it then). Throws only AgentError.
   */
  async #connectOnce(signal: AbortSignal): Promise<{ online: boolean; reason: string }> {
    let link: RelayLink | undefined;
    try {
      link = await this.options.connect();
      let session = await this.#start(link);
      for (;;) {
        const probe = new AbortController();
        const next = await Promise.race([
          session.lost.then((reason) => ({ reason })),
          aborted(signal).then((reason) => ({ reason })),
          ...(link.better ? [link.better(probe.signal).then((better) => ({ better }))] : []),
        ]);
        probe.abort();
        if ("better" in next) {
          [link, session] = await this.#move(link, session, next.better);
          continue;
        }
        this.#session = undefined;
        if (signal.aborted) {
          await session.leave("client exit");
          this.#resumable?.close({ code: 0, reason: "client exit" });
        } else session.close("reconnecting");
        return { online: true, reason: next.reason };
      }
    } catch (error) {
      if (error instanceof AgentError) throw error;
      link?.conn.close({ code: 0, reason: "reconnecting" });
      return { online: false, reason: error instanceof Error ? error.message : String(error) };
    }
  }

  /** Opens a session on `link`, goes online with it and serves the relay's streams. */
  async #start(link: RelayLink): Promise<RelaySession> {
    const asked = [...this.#tunnels];
    const { session, welcome } = await RelaySession.open(link, this.#hello());
    const streams = this.#carry(link, welcome);
    this.#online(link, session, welcome, asked);
    session.serve(streams, (stream) =>
      answerStream(stream, {
        events: this.events,
        originTimeoutMs: this.options.originTimeoutMs ?? 60_000,
        find: (route) => this.#tunnels.find((tunnel) => tunnel.route === route),
        originReached: (tunnel, reached) =>
          this.#health.report(this.#healthKey(tunnel), reached, "connection refused"),
      }));
    return session;
  }

  /** Moves to `better`; the old session keeps serving until the relay closes it. Stays put if that fails. */
  async #move(
    old: RelayLink,
    oldSession: RelaySession,
    better: RelayLink,
  ): Promise<[RelayLink, RelaySession]> {
    try {
      const session = await this.#start(better);
      // The relay closes the old connection once what it carried is done; nothing is left to say on it.
      oldSession.lost.then(() => oldSession.close("moved to a better transport"));
      return [better, session];
    } catch (error) {
      if (error instanceof AgentError) throw error;
      log.warn("could not move to {transport}: {error}", {
        transport: better.conn.transport,
        error: (error as Error).message,
      });
      better.conn.close({ code: 0, reason: "not moving" });
      return [old, oldSession];
    }
  }

  #hello(): FrameOf<"hello"> {
    return {
      type: "hello",
      version: PROTOCOL_VERSION,
      token: this.options.token,
      clientId: this.options.clientId,
      instance: this.#instance,
      tunnels: this.#tunnels.map((tunnel) => tunnel.request()),
      resume: this.options.graceMs ? { token: this.#resumable && this.#resumeToken } : undefined,
    };
  }

  /**
   * The streams to answer on this connection: its own, or, with resumable streams, a new resumable
   * connection's; none when the relay resumed the last one (whose streams are answered already).
   */
  #carry(link: RelayLink, welcome: FrameOf<"welcome">): ReadableStream<TunnelStream> {
    const graceMs = this.options.graceMs;
    if (!graceMs) return link.conn.incomingStreams;
    if (welcome.resumed && this.#resumable) {
      this.#resumable.attach(link.conn);
      return new ReadableStream({ start: (controller) => controller.close() });
    }
    this.#resumable?.close({ code: 0, reason: "the relay did not resume the connection" });
    this.#resumable = new ResumableConnection(link.conn, "agent", graceMs);
    this.#resumeToken = welcome.resumeToken;
    return this.#resumable.incomingStreams;
  }

  /** Online with `session`, whose hello asked for the tunnels `asked` (in the order of the grants). */
  #online(link: RelayLink, session: RelaySession, welcome: FrameOf<"welcome">, asked: Tunnel[]) {
    welcome.tunnels.forEach((grant, i) => asked[i].granted(grant));
    this.#session = session;
    for (const tunnel of this.#tunnels) {
      // A resumed session grants nothing new: the relay still holds what was granted before the drop.
      if (!asked.includes(tunnel) || (welcome.resumed && !tunnel.grant)) void this.#askLate(tunnel);
    }
    const replay = welcome.resumed ? this.#changedOffline : [];
    this.#changedOffline = [];
    for (const change of replay) void this.#change(change).catch(ignoreUnknownTunnel);
    this.#setLink({ state: "online", since: Date.now(), relay: link.relay, transport: link.conn.transport });
    // The relay forgets what it heard of origins when the link drops: it hears it again.
    for (const tunnel of this.#tunnels) {
      const health = this.healthOf(tunnel);
      if (health?.up === false) this.#tellHealth(tunnel, health);
    }
    this.events.emit("online", {
      link: { relay: link.relay, transport: link.conn.transport, fingerprint: link.fingerprint },
      tunnels: this.#tunnels.map((tunnel) => tunnel.status()),
    });
  }

  /** A tunnel added while the hello was on its way was not in it: asked for on the live connection now. */
  async #askLate(tunnel: Tunnel) {
    try {
      const ack = await this.#change({ op: "add", tunnel: tunnel.request() });
      if (!ack?.grant) return;
      tunnel.granted(ack.grant);
      this.events.emit("tunnel-added", tunnel.status());
    } catch (error) {
      log.error("the relay refused {name}: {error}", { name: tunnel.name, error: (error as Error).message });
    }
  }

  #setLink(link: LinkState) {
    this.#link = { relay: this.#link.relay, transport: this.#link.transport, ...link };
  }

  #stopped(reason: string) {
    this.#setLink({ state: "offline", since: Date.now(), reason });
    this.#health.stop();
    for (const tunnel of this.#tunnels) tunnel.close();
    this.events.emit("offline", { reason });
  }

  #healthKey(tunnel: Tunnel): string {
    let key = this.#healthKeys.get(tunnel);
    if (!key) this.#healthKeys.set(tunnel, key = crypto.randomUUID());
    return key;
  }

  #watch(tunnel: Tunnel) {
    const { origin, healthPath } = tunnel.spec;
    this.#health.watch(this.#healthKey(tunnel), {
      origin,
      path: tunnel.spec.kind === "http" ? healthPath : undefined,
    });
  }

  /** Says once that an origin is down, and once that it is back; tells the relay too. */
  #healthChanged(key: string, state: HealthState, wasUp: boolean | undefined) {
    const tunnel = this.#tunnels.find((candidate) => this.#healthKeys.get(candidate) === key);
    // An origin found up at the first probe was never down: nothing to say.
    if (!tunnel || state.up && wasUp === undefined) return;
    if (state.up) {
      log.info("{origin} answers again", { origin: tunnel.target });
      this.events.emit("origin-up", { tunnel: tunnel.name, target: tunnel.target });
    } else {
      log.error("nothing answers at {origin} ({reason}); visitors get {what} until it is back", {
        origin: tunnel.target,
        reason: state.reason,
        what: tunnel.spec.kind === "http" ? "502" : "closed connections",
      });
      this.events.emit("origin-down", {
        tunnel: tunnel.name,
        target: tunnel.target,
        reason: state.reason ?? "",
      });
    }
    this.#tellHealth(tunnel, state);
  }

  #tellHealth(tunnel: Tunnel, state: HealthState) {
    const route = routeOf(tunnel);
    if (!route || !this.#session) return;
    this.#session.tellHealth({ route, up: state.up ?? true, since: state.since, message: state.reason })
      .catch(() => {
        // The link is going down; the next welcome tells the relay again.
      });
  }
}

/** The relay's name for a granted tunnel. */
function routeOf(tunnel: Tunnel): TunnelRoute | undefined {
  return tunnel.grant && { kind: tunnel.grant.kind, name: tunnel.grant.name };
}

/** A tunnel the relay no longer knows is as removed as it can be. */
function ignoreUnknownTunnel(error: unknown) {
  if (!(error instanceof TunnelRefused && error.code === "unknown_tunnel")) throw error;
}

/** Resolves with a reason once `signal` aborts. */
function aborted(signal: AbortSignal): Promise<string> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve("stopped");
    signal.addEventListener("abort", () => resolve("stopped"), { once: true });
  });
}

export type { TunnelStatus };
