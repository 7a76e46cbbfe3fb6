/**
 * Requests in flight on the public side, in all and per tunnel: what the
 * in-flight caps check, and what the status page (and later a metrics
 * endpoint) reads.
 *
 * @example
 * ```ts
 * const counters = new PublicCounters();
 * const settle = counters.begin("api"); // counters.inFlight === 1
 * settle();                              // 0 again; a second call does nothing
 * ```
 * @module
 */
export class PublicCounters {
  #inFlight = 0;
  #byTunnel = new Map<string, number>();

  /** Requests in flight on the relay. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Requests in flight on tunnel `name`. */
  inFlightOn(name: string): number {
    return this.#byTunnel.get(name) ?? 0;
  }

  /** Counts a request to `name` as in flight; the result uncounts it, once however often it is called. */
  begin(name: string): () => void {
    this.#inFlight++;
    this.#byTunnel.set(name, this.inFlightOn(name) + 1);
    let settled = false;
    return () => {
      if (settled) return;
      settled = true;
      this.#inFlight--;
      const left = this.inFlightOn(name) - 1;
      if (left === 0) this.#byTunnel.delete(name);
      else this.#byTunnel.set(name, left);
    };
  }
}
