/**
 * Fairness between tunnels on one relay. The relay does its work on one
 * event loop, so when it is overloaded, a tunnel with many requests in
 * progress makes everyone else's requests wait behind its work. While the
 * relay is overloaded and more than one tunnel is busy, the gate lets each
 * tunnel have only a few requests in progress and parks the rest, so a flood
 * queues behind itself. A lone tunnel, or any tunnel on a relay with time to
 * spare, is never held back.
 *
 * A request gives its slot back when it is done, or after `holdMs` at the
 * latest: long polls, event streams and big transfers are slow, not busy, and
 * must never block the requests behind them.
 *
 * @example
 * ```ts
 * declare const forward: () => Promise<Response>;
 * const lag = new LoopLag();
 * const gate = new FairGate({ slots: 1, holdMs: 10, overloaded: () => lag.ms > 1.5 });
 * const release = await gate.enter("api");
 * try {
 *   await forward();
 * } finally {
 *   release();
 * }
 * ```
 * @module
 */

export interface FairGateOptions {
  /** Requests one tunnel may have in progress while the gate holds tunnels back. */
  slots: number;
  /** Longest a request keeps its slot. */
  holdMs: number;
  /** Whether the relay is short of time; the gate only holds tunnels back then. */
  overloaded: () => boolean;
}

interface Lane {
  busy: number;
  waiting: (() => void)[];
  lastActive: number;
}

/** A tunnel counts as busy for this long after its last request. */
const BUSY_WINDOW_MS = 1000;

export class FairGate {
  #lanes = new Map<string, Lane>();
  #swept = 0;
  #holdingUntil = 0;

  constructor(readonly options: FairGateOptions) {}

  /** Waits for a slot on `key`'s lane; resolves to the function that gives it back (safe to call twice). */
  async enter(key: string): Promise<() => void> {
    let lane = this.#lanes.get(key);
    if (!lane) this.#lanes.set(key, lane = { busy: 0, waiting: [], lastActive: 0 });
    lane.lastActive = performance.now();
    this.#sweep(lane.lastActive);
    if (lane.busy >= this.options.slots && this.#holdingBack()) {
      await new Promise<void>((resolve) => lane.waiting.push(resolve));
    } else {
      lane.busy++;
    }
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      clearTimeout(timer);
      this.#handOn(lane);
    };
    const timer = setTimeout(release, this.options.holdMs);
    return release;
  }

  /**
   * True while more than one tunnel is busy and the relay is overloaded, or
   * was within the last window: holding back lowers the load, which must not
   * let a flood straight back in at once.
   */
  #holdingBack(): boolean {
    const now = performance.now();
    let busy = 0;
    for (const lane of this.#lanes.values()) {
      if ((lane.busy > 0 || lane.lastActive > now - BUSY_WINDOW_MS) && ++busy > 1) break;
    }
    if (busy < 2) return false;
    if (this.options.overloaded()) this.#holdingUntil = now + BUSY_WINDOW_MS;
    return now < this.#holdingUntil;
  }

  /** Forgets lanes idle for a while, at most once per window. */
  #sweep(now: number) {
    if (now - this.#swept < BUSY_WINDOW_MS) return;
    this.#swept = now;
    for (const [key, lane] of this.#lanes) {
      if (lane.busy === 0 && lane.lastActive < now - BUSY_WINDOW_MS) this.#lanes.delete(key);
    }
  }

  #handOn(lane: Lane) {
    const next = lane.waiting.shift();
    // The slot passes straight to the next request in line, so `busy` stays as it is.
    if (next) {
      next();
      // Once the relay has time again, everyone parked goes at once.
      if (!this.#holdingBack()) {
        lane.busy += lane.waiting.length;
        for (const waiter of lane.waiting.splice(0)) waiter();
      }
      return;
    }
    lane.busy--;
  }
}

/**
 * How late the event loop runs, smoothed: a timer that should fire every
 * `intervalMs` measures its own delay. Well under a millisecond on a relay
 * with time to spare; milliseconds when work queues up.
 */
export class LoopLag {
  #smoothed = 0;
  #timer: ReturnType<typeof setInterval>;

  constructor(intervalMs = 10) {
    let expected = performance.now() + intervalMs;
    this.#timer = setInterval(() => {
      const now = performance.now();
      this.#smoothed = 0.8 * this.#smoothed + 0.2 * Math.max(0, now - expected);
      expected = now + intervalMs;
    }, intervalMs);
  }

  /** Smoothed lag in milliseconds. */
  get ms(): number {
    return this.#smoothed;
  }

  /** Stops measuring; the timer would otherwise keep the process alive. */
  stop(): void {
    clearInterval(this.#timer);
  }
}
