/**
 * Who holds which public name and port on the relay, and on what terms: the
 * live client sessions, the names and TCP ports they hold (and hold through
 * a grace period when their connection drops), the caps a client or token
 * may not go past, and the reservations in `state.db` that let a restarted
 * relay keep each name for its owner.
 *
 * @example
 * ```ts
 * import type { TunnelRequest } from "../wire/protocol.ts";
 * import type { ClientSession } from "./session.ts";
 * import type { TcpPorts } from "./tcp_ports.ts";
 * declare const ports: TcpPorts, session: ClientSession, asked: TunnelRequest[];
 * const caps = { maxTcpTunnelsPerClient: 16, allowPunycode: false };
 * const book = new TunnelBook({ domain: "tunnel.example.com", graceMs: 60_000, ...caps }, ports);
 * const grants = book.admit(session, asked, null, (name) => `http://${name}.tunnel.example.com`);
 * book.lookup("api"); // { state: "online", session } when `asked` held { kind: "http", name: "api" }
 * ```
 * @module
 */
import {
  CloseCode,
  type FrameOf,
  ProtocolError,
  type TunnelGrant,
  type TunnelRequest,
  type TunnelRoute,
} from "../wire/protocol.ts";
import { isPunycode, isValidName } from "../shared/names.ts";
import { getLogger } from "../shared/log.ts";
import { type Lookup, TunnelRegistry } from "./registry.ts";
import type { ClientSession } from "./session.ts";
import type { TcpPorts } from "./tcp_ports.ts";
import { type AccessGuard, accessGuard } from "./public/access.ts";
import type { TunnelCondition } from "./public/app.ts";
import { DEBUG_PATH, DebugReceivers, debugRoute } from "./debug_routes.ts";
import type { TunnelSession } from "./public/app.ts";
import { matchesPattern, type TokenRecord, type TokenStore } from "./state/token_store.ts";

const log = getLogger(["reverprox", "relay"]);

export interface TunnelBookOptions {
  domain: string;
  graceMs: number;
  /** TCP tunnels one client (client id) may hold, so no one takes the whole port range. */
  maxTcpTunnelsPerClient: number;
  /** Let tunnels take punycode names (`xn--…`, shown by browsers as Unicode look-alikes). */
  allowPunycode: boolean;
  tokenStore?: TokenStore;
}

/** Tunnels held, in all and TCP only. */
interface Held {
  all: number;
  tcp: number;
}

export class TunnelBook {
  readonly sessions = new Set<ClientSession>();
  readonly http: TunnelRegistry<ClientSession>;
  /** TCP tunnels, keyed by public port number. */
  readonly tcp: TunnelRegistry<ClientSession>;
  /** Clients attached to others' http tunnels as debug receivers. */
  readonly debug = new DebugReceivers<ClientSession>();

  constructor(private readonly options: TunnelBookOptions, private readonly ports: TcpPorts) {
    this.http = new TunnelRegistry(options.graceMs, {
      onRelease: (name) => {
        // A name someone else may take next must not keep sending marked requests to this one's receivers.
        this.debug.detachName(name);
        this.#unreserve("http", name);
      },
    });
    this.tcp = new TunnelRegistry(options.graceMs, {
      onRelease: (port) => {
        this.#unreserve("tcp", port);
        this.ports.close(Number(port));
      },
    });
  }

  lookup(name: string): Lookup<ClientSession> {
    return this.http.lookup(name);
  }

  /**
   * Where a visitor's request to tunnel `name` goes: to the debug receiver `debugId` names when one is
   * attached (`debug: true`) and the owner is online, else to the owner, as {@link lookup} says.
   */
  route(name: string, debugId?: string): Lookup<TunnelSession> & { debug?: true } {
    const found = this.http.lookup(name);
    const receiver = debugId === undefined ? undefined : this.debug.find(name, debugId);
    if (found.state !== "online" || !receiver) return found;
    return { state: "online", session: debugRoute(found.session, receiver), debug: true };
  }

  /**
   * Gives `session` the tunnels it asks for, or throws the refusal that says why not (caps, names,
   * ports, a failed write to `state.db`); on success, older sessions of the same client holding those
   * names are closed, and the grants come back in the order asked.
   */
  admit(
    session: ClientSession,
    asked: TunnelRequest[],
    record: TokenRecord | null,
    publicUrl: (name: string) => string,
  ): TunnelGrant[] {
    const owned = asked.filter((tunnel) => !tunnel.debug);
    this.#checkDebug(asked.filter((tunnel) => tunnel.debug), record);
    this.#checkCaps(owned, session.ownerKey, record);
    const { names, guards } = this.#httpNames(owned, session.ownerKey);
    const tcpAsked = owned.filter((tunnel) => tunnel.kind === "tcp").map((tunnel) => tunnel.remotePort);
    const ports = this.ports.reserve(tcpAsked, (port) => this.tcp.available(String(port), session.ownerKey));
    this.#saveReservations(names, ports, session.ownerKey);
    session.token = record ?? undefined;
    for (const [name, guard] of guards) session.guards.set(name, guard);
    this.#claim(session, names, ports);
    const nextName = names.values(), nextPort = ports.values();
    const grants = asked.map((tunnel): TunnelGrant => {
      if (tunnel.debug) {
        const name = tunnel.name ?? "";
        const debugId = this.debug.attach(name, session, session.ownerKey);
        return { kind: "http", name, url: `${publicUrl(name)}${DEBUG_PATH}${debugId}`, debugId };
      }
      if (tunnel.kind === "http") {
        const name = nextName.next().value!;
        return { kind: "http", name, url: publicUrl(name) };
      }
      const port = nextPort.next().value!;
      return {
        kind: "tcp",
        name: String(port),
        url: `tcp://${this.options.domain}:${port}`,
        remotePort: port,
      };
    });
    grants.forEach((grant, i) =>
      asked[i].suspended && !asked[i].debug &&
      this.#setCondition(session, heldKey(grant), { suspended: true })
    );
    return grants;
  }

  /** Applies a change a client asks for on its live connection; the ack says how it went. */
  change(
    session: ClientSession,
    frame: FrameOf<"tunnel-update">,
    publicUrl: (name: string) => string,
  ): FrameOf<"tunnel-ack"> {
    try {
      if (frame.op === "add") {
        return { type: "tunnel-ack", id: frame.id, grant: this.#addOne(session, frame.tunnel, publicUrl) };
      }
      const key = heldKey(frame.route);
      if (frame.op === "remove" && frame.route.kind === "http" && this.debug.detachOne(key, session)) {
        return { type: "tunnel-ack", id: frame.id };
      }
      if (!session.names.includes(key)) {
        throw new ProtocolError(
          "unknown_tunnel",
          `this client holds no ${frame.route.kind} tunnel "${frame.route.name}"`,
        );
      }
      if (frame.op === "remove") this.#removeOne(session, key);
      else {
        const originDown = session.conditions.get(key)?.originDown;
        this.#setCondition(session, key, { suspended: frame.op === "suspend", originDown });
      }
      log.info("client {id}: {op} {key}", { id: session.id, op: frame.op, key });
      return { type: "tunnel-ack", id: frame.id };
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      return { type: "tunnel-ack", id: frame.id, error: { code: error.code, message: error.message } };
    }
  }

  /** What a client says of a tunnel's origin: while it is down, visitors are answered at once. */
  health(session: ClientSession, frame: FrameOf<"origin-health">): void {
    const key = heldKey(frame.route);
    if (!session.names.includes(key)) return;
    const suspended = session.conditions.get(key)?.suspended ?? false;
    const originDown = frame.up ? undefined : { since: frame.since, message: frame.message };
    this.#setCondition(session, key, { suspended, originDown });
  }

  /** Counts for the relay's status page: clients by transport, tunnels, and those paused or with their origin down. */
  stats(): Record<string, number> {
    const counts: Record<string, number> = {
      clients: this.sessions.size,
      httpTunnels: this.http.size,
      tcpTunnels: this.tcp.size,
    };
    for (const session of this.sessions) {
      const transport = `clientsOver_${session.conn.transport}`;
      counts[transport] = (counts[transport] ?? 0) + 1;
      for (const condition of session.conditions.values()) {
        if (condition.suspended) counts.suspendedTunnels = (counts.suspendedTunnels ?? 0) + 1;
        if (condition.originDown) counts.originDownTunnels = (counts.originDownTunnels ?? 0) + 1;
      }
    }
    return counts;
  }

  /** The session left on purpose: its names and ports are free at once. */
  release(session: ClientSession): void {
    this.debug.detach(session);
    this.sessions.delete(session);
    this.http.release(session);
    this.tcp.release(session);
  }

  /** The session's connection dropped: its names and ports are held for its owner through the grace period. */
  hold(session: ClientSession): void {
    // A receiver holds no name: its marked requests go back to the owner at once.
    this.debug.detach(session);
    if (!this.sessions.delete(session)) return;
    const held = [...this.http.hold(session), ...this.tcp.hold(session).map((port) => `tcp:${port}`)];
    // A session a newer one replaced holds nothing by now: its names went with it.
    if (!held.length) return;
    log.info("client {id} lost; holding {names} for {grace} ms", {
      id: session.id,
      names: held.join(", "),
      grace: this.options.graceMs,
    });
  }

  /** Holds the names and ports clients had before a restart, for them only, through one grace period. */
  restore(): void {
    const store = this.options.tokenStore;
    if (!store) return;
    for (const { name, ownerKey } of store.reservations("http")) this.http.restore(name, ownerKey);
    for (const { name, ownerKey } of store.reservations("tcp")) {
      if (this.ports.bind(Number(name))) this.tcp.restore(name, ownerKey);
      else this.#unreserve("tcp", name);
    }
  }

  /** Forgets everything without releasing it (relay shutdown: reservations on disk stay). */
  clear(): void {
    this.debug.clear();
    this.http.clear();
    this.tcp.clear();
    this.ports.closeAll();
  }

  #addOne(session: ClientSession, tunnel: TunnelRequest, publicUrl: (name: string) => string): TunnelGrant {
    const key = tunnel.kind === "http" ? tunnel.name ?? "" : `tcp:${tunnel.remotePort}`;
    if (session.names.includes(key)) {
      throw new ProtocolError("name_taken", `"${key}" is already held by this client`);
    }
    return this.admit(session, [tunnel], session.token ?? null, publicUrl)[0];
  }

  #removeOne(session: ClientSession, key: string) {
    session.names.splice(session.names.indexOf(key), 1);
    session.guards.delete(key);
    session.conditions.delete(key);
    if (key.startsWith("tcp:")) this.tcp.releaseOne(key.slice(4), session);
    else this.http.releaseOne(key, session);
  }

  #setCondition(session: ClientSession, key: string, condition: TunnelCondition) {
    if (condition.suspended || condition.originDown) session.conditions.set(key, condition);
    else session.conditions.delete(key);
  }

  #claim(session: ClientSession, names: string[], ports: number[]) {
    const replaced = new Set<ClientSession>();
    for (const name of names) {
      const claim = this.http.claim(name, session.ownerKey, session);
      if (claim.ok && claim.replaced) replaced.add(claim.replaced);
    }
    for (const port of ports) {
      const claim = this.tcp.claim(String(port), session.ownerKey, session);
      if (claim.ok && claim.replaced) replaced.add(claim.replaced);
    }
    for (const old of replaced) {
      // The same process moving finishes its exchanges on the old connection; a restarted one left them.
      if (old.instance !== undefined && old.instance === session.instance) {
        old.retire("moved to a newer connection");
      } else old.close(CloseCode.replaced, "replaced by a newer connection of the same client");
    }
    session.names.push(...names, ...ports.map((port) => `tcp:${port}`));
    this.sessions.add(session);
  }

  /**
   * The http tunnels' names and access guards, checked: valid DNS labels, no punycode unless allowed,
   * none asked for twice, none held by another owner.
   */
  #httpNames(asked: TunnelRequest[], ownerKey: string) {
    const guards = new Map<string, AccessGuard>();
    const names = asked.filter((tunnel) => tunnel.kind === "http").map((tunnel) => {
      const name = tunnel.name ?? "";
      try {
        const guard = accessGuard(tunnel.access);
        if (guard) guards.set(name, guard);
      } catch (error) {
        throw new ProtocolError("bad_frame", `bad access rule for "${name}": ${(error as Error).message}`);
      }
      this.#checkName(name);
      return name;
    });
    const duplicate = names.find((name, i) => names.indexOf(name) !== i);
    if (duplicate) throw new ProtocolError("name_invalid", `"${duplicate}" is asked for twice`);
    const taken = names.find((name) => !this.http.available(name, ownerKey));
    if (taken) throw new ProtocolError("name_taken", `"${taken}" is in use by another client`);
    return { names, guards };
  }

  /**
   * Debug receivers ask for http tunnels someone holds (online or in their grace period), with a store
   * token that has the `debug` permission.
   */
  #checkDebug(asked: TunnelRequest[], record: TokenRecord | null) {
    for (const tunnel of asked) {
      if (!record?.debug) {
        throw new ProtocolError(
          "not_permitted",
          `${record ? `token "${record.label}"` : "this client's token"} has no debug permission ` +
            "(the relay's operator grants it: reverprox-server token add --debug)",
        );
      }
      if (tunnel.kind !== "http") {
        throw new ProtocolError("bad_frame", "only http tunnels take debug receivers");
      }
      if (this.http.lookup(tunnel.name ?? "").state === "unknown") {
        throw new ProtocolError(
          "unknown_tunnel",
          `no tunnel "${tunnel.name ?? ""}" to attach to; start its main client first`,
        );
      }
    }
  }

  #checkName(name: string) {
    if (!isValidName(name)) {
      throw new ProtocolError("name_invalid", `"${name}" is not a DNS label (a-z, 0-9, inner "-", up to 63)`);
    }
    if (isPunycode(name) && !this.options.allowPunycode) {
      throw new ProtocolError(
        "name_invalid",
        `"${name}" is a punycode name, which browsers show as Unicode that can pass for another name; ` +
          "this relay does not allow them (--allow-punycode)",
      );
    }
  }

  /**
   * Holds a request for tunnels to the caps: TCP tunnels per client, and a store token's name pattern
   * and tunnel counts. Every live session counts (the same client's, by owner key, also in other
   * processes of the same install; the token's, or any token of its sign-up account), except the
   * sessions this request will replace.
   */
  #checkCaps(asked: TunnelRequest[], ownerKey: string, record: TokenRecord | null) {
    const replaced = this.#replacedBy(asked, ownerKey);
    const held = (counts: (session: ClientSession) => boolean): Held => {
      let all = 0, tcp = 0;
      for (const session of this.sessions) {
        if (!counts(session) || replaced.has(session)) continue;
        all += session.names.length;
        tcp += session.names.filter((name) => name.startsWith("tcp:")).length;
      }
      return { all, tcp };
    };
    const wanted = { all: asked.length, tcp: asked.filter((t) => t.kind === "tcp").length };
    const perClient = this.options.maxTcpTunnelsPerClient;
    const clientTcp = wanted.tcp > 0 ? held((session) => session.ownerKey === ownerKey).tcp : 0;
    if (clientTcp + wanted.tcp > perClient) {
      throw new ProtocolError(
        "too_many_tunnels",
        `a client may hold ${perClient} TCP tunnels on this relay; ${clientTcp} are open`,
      );
    }
    if (record) checkTokenRule(record, asked, wanted, held((session) => sharesCaps(session, record)));
  }

  /**
   * The live sessions a request for `asked` will close: the same owner's, holding a name or port it
   * asks for again (a restarted client whose old connection has not timed out yet).
   */
  #replacedBy(asked: TunnelRequest[], ownerKey: string): Set<ClientSession> {
    const keys = new Set(
      asked.map((tunnel) => tunnel.kind === "http" ? tunnel.name : `tcp:${tunnel.remotePort}`),
    );
    return new Set(
      [...this.sessions].filter((session) =>
        session.ownerKey === ownerKey && session.names.some((name) => keys.has(name))
      ),
    );
  }

  /**
   * Writes the names and ports to `state.db` in one transaction, before any is claimed in memory: when
   * the write fails (the database locked past its busy timeout, a full disk) the client is refused with
   * `internal` and retries, and no name is left to a session that never came up.
   */
  #saveReservations(names: string[], ports: number[], ownerKey: string) {
    try {
      this.options.tokenStore?.reserve(
        [
          ...names.map((name) => ({ kind: "http", name })),
          ...ports.map((port) => ({ kind: "tcp", name: `${port}` })),
        ],
        ownerKey,
      );
    } catch (error) {
      for (const port of ports) {
        if (this.tcp.lookup(String(port)).state === "unknown") this.ports.close(port);
      }
      log.error("could not save reservations to state.db: {error}", { error: String(error) });
      throw new ProtocolError(
        "internal",
        `the relay could not save its state (${(error as Error).message}); try again shortly`,
      );
    }
  }

  /**
   * Drops a reservation from `state.db`. A failure is logged and otherwise safe: the stale row only
   * makes a restarted relay hold the name for its owner through one grace period.
   */
  #unreserve(kind: "http" | "tcp", name: string) {
    try {
      this.options.tokenStore?.unreserve(kind, name);
    } catch (error) {
      log.warn("could not drop the reservation of {kind} {name} from state.db: {error}", {
        kind,
        name,
        error: String(error),
      });
    }
  }
}

/** The key a session holds a tunnel under: its http name, or `tcp:<port>`. */
function heldKey(route: TunnelRoute): string {
  return route.kind === "http" ? route.name : `tcp:${route.name}`;
}

/** Holds a request to a store token's name pattern and tunnel counts, given what the token already holds. */
function checkTokenRule(record: TokenRecord, asked: TunnelRequest[], wanted: Held, held: Held) {
  const pattern = record.namePattern;
  const outside = pattern && asked.find((t) => t.kind === "http" && !matchesPattern(t.name ?? "", pattern));
  if (outside) {
    throw new ProtocolError(
      "not_permitted",
      `token "${record.label}" may only use names matching ${pattern}`,
    );
  }
  if (record.maxTcpTunnels === 0 && wanted.tcp > 0) {
    throw new ProtocolError("not_permitted", `token "${record.label}" may not open TCP tunnels`);
  }
  if (record.maxTunnels !== null && held.all + wanted.all > record.maxTunnels) {
    throw new ProtocolError(
      "too_many_tunnels",
      `token "${record.label}" may hold ${record.maxTunnels} tunnels; ${held.all} are open`,
    );
  }
  if (record.maxTcpTunnels !== null && held.tcp + wanted.tcp > record.maxTcpTunnels) {
    throw new ProtocolError(
      "too_many_tunnels",
      `token "${record.label}" may hold ${record.maxTcpTunnels} TCP tunnels; ${held.tcp} are open`,
    );
  }
}

/** Whether `session` counts against `record`'s caps: it used that token, or a token of the same account. */
function sharesCaps(session: ClientSession, record: TokenRecord): boolean {
  if (!session.token) return false;
  return record.account === null ? session.token.id === record.id : session.token.account === record.account;
}
