/**
 * Which client owns which public name, on the relay. A name belongs to an
 * owner key (derived from the client's persistent id); when the client's
 * connection drops, the name is held offline for a grace period so that only
 * the same owner can take it back, then recycled.
 *
 * @example
 * ```ts
 * const registry = new TunnelRegistry<string>(60_000);
 * registry.claim("api", "owner-1", "session-a"); // { ok: true }
 * registry.claim("api", "owner-2", "session-b"); // { ok: false }
 * registry.lookup("api");                        // { state: "online", session: "session-a" }
 * ```
 * @module
 */

interface Entry<S> {
  ownerKey: string;
  session: S | null;
  releaseTimer?: ReturnType<typeof setTimeout>;
}

export type Lookup<S> =
  | { state: "online"; session: S }
  | { state: "offline" }
  | { state: "unknown" };

export type Claim<S> =
  | { ok: true; replaced?: S }
  | { ok: false };

/** Name → owner map with grace-period reservations. `S` is the session type. */
export class TunnelRegistry<S> {
  #entries = new Map<string, Entry<S>>();

  /**
   * `hooks.onRelease` runs when a name stops being held (goodbye, or the
   * grace period ran out); the relay uses it to drop reservations on disk and
   * to close TCP ports.
   */
  constructor(
    readonly graceMs: number,
    private readonly hooks: { onRelease?: (name: string) => void } = {},
  ) {}

  /**
   * Gives `name` to `session` unless another owner holds it (online or in its
   * grace period). When the same owner still has it on an older session, that
   * session is returned as `replaced` so the caller can close it. Nothing here
   * can fail halfway: what may fail (the reservation on disk) is done by the
   * caller before it claims.
   */
  claim(name: string, ownerKey: string, session: S): Claim<S> {
    const entry = this.#entries.get(name);
    if (entry && entry.ownerKey !== ownerKey) return { ok: false };
    if (entry?.releaseTimer !== undefined) clearTimeout(entry.releaseTimer);
    const replaced = entry?.session && entry.session !== session ? entry.session : undefined;
    this.#entries.set(name, { ownerKey, session });
    return { ok: true, replaced };
  }

  /** Holds `name` for `ownerKey` as if its client had just dropped (a reservation read back after a restart). */
  restore(name: string, ownerKey: string): void {
    this.#entries.set(name, {
      ownerKey,
      session: null,
      releaseTimer: setTimeout(() => this.#delete(name), this.graceMs),
    });
  }

  /** Whether `name` may be claimed by `ownerKey` now. */
  available(name: string, ownerKey: string): boolean {
    const entry = this.#entries.get(name);
    return !entry || entry.ownerKey === ownerKey;
  }

  lookup(name: string): Lookup<S> {
    const entry = this.#entries.get(name);
    if (!entry) return { state: "unknown" };
    return entry.session ? { state: "online", session: entry.session } : { state: "offline" };
  }

  /** The session dropped without saying goodbye: hold its names for the grace period. Returns them. */
  hold(session: S): string[] {
    const held: string[] = [];
    for (const [name, entry] of this.#entries) {
      if (entry.session !== session) continue;
      entry.session = null;
      entry.releaseTimer = setTimeout(() => this.#delete(name), this.graceMs);
      held.push(name);
    }
    return held;
  }

  /** The session left on purpose: its names are free at once. */
  release(session: S): void {
    for (const [name, entry] of this.#entries) {
      if (entry.session === session) this.#delete(name);
    }
  }

  /** `session` gives up `name` alone (a tunnel removed from a live connection): it is free at once. */
  releaseOne(name: string, session: S): void {
    if (this.#entries.get(name)?.session === session) this.#delete(name);
  }

  /** Names currently held online or in grace. */
  get size(): number {
    return this.#entries.size;
  }

  /** Forgets everything without releasing it (relay shutdown: reservations on disk stay). */
  clear(): void {
    for (const entry of this.#entries.values()) {
      if (entry.releaseTimer !== undefined) clearTimeout(entry.releaseTimer);
    }
    this.#entries.clear();
  }

  #delete(name: string) {
    const entry = this.#entries.get(name);
    if (entry?.releaseTimer !== undefined) clearTimeout(entry.releaseTimer);
    if (this.#entries.delete(name)) this.hooks.onRelease?.(name);
  }
}
