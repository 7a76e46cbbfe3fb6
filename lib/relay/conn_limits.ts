/**
 * How many TCP connections the relay keeps open: in all, so it never runs out
 * of file descriptors, and per visitor address, so one address cannot hold
 * every slot with idle or trickling connections.
 *
 * Running out of descriptors is not an error the relay can recover from
 * cleanly: Deno's `node:http` listener stops accepting for good after an
 * `EMFILE` (and `Deno.serve`'s accept loop throws it uncaught). So the relay
 * keeps its total below the process's open-file limit, minus a reserve for
 * what a listener may accept in one burst before the relay can refuse
 * (`LISTEN_BACKLOG` per listener) and for its own files; connections over the
 * caps are accepted and closed at once, and the relay says so once per episode.
 *
 * @example
 * ```ts
 * import type { Socket } from "node:net";
 * declare const socket: Socket;
 * const limits = new ConnectionLimits({ total: connectionBudget(), perAddress: 256 });
 * const release = limits.admit(socket.remoteAddress ?? "");
 * if (!release) socket.destroy();
 * else socket.once("close", release);
 * ```
 * @module
 */
import { getLogger } from "../shared/log.ts";

const log = getLogger(["reverprox", "limits"]);

/** Pending connections each listener may queue in the kernel: the most it accepts in one burst. */
export const LISTEN_BACKLOG = 128;
/** Descriptors kept back from the budget: two listeners' bursts, state.db, logs, QUIC, stdio. */
const RESERVED_DESCRIPTORS = 2 * LISTEN_BACKLOG + 128;
/** The budget when the open-file limit cannot be read (no /proc: macOS, Windows). */
const UNKNOWN_LIMIT_BUDGET = 4096;

/** The process's soft open-file limit, from `/proc/self/limits`; undefined where that cannot be read. */
function openFileLimit(): number | undefined {
  let limits: string;
  try {
    limits = Deno.readTextFileSync("/proc/self/limits");
  } catch {
    // No /proc here (macOS, Windows): the caller falls back to a fixed budget.
    return undefined;
  }
  const soft = limits.match(/^Max open files\s+(\d+|unlimited)/m)?.[1];
  return soft === undefined || soft === "unlimited" ? undefined : Number(soft);
}

/** Connections the relay may hold at once, given its open-file limit. */
export function connectionBudget(limit = openFileLimit()): number {
  if (limit === undefined) return UNKNOWN_LIMIT_BUDGET;
  return Math.max(64, limit - RESERVED_DESCRIPTORS);
}

export class ConnectionLimits {
  #open = 0;
  #byAddress = new Map<string, number>();
  /** Set while the total is at its cap, so that is said once per episode. */
  #shedding = false;
  #refused = 0;
  /** Addresses at their own cap, each said once until it drops below. */
  #atAddressCap = new Set<string>();

  constructor(readonly caps: { total: number; perAddress: number }) {}

  /** Counts a new connection from `address`; returns its release, or undefined when it must be closed. */
  admit(address: string): (() => void) | undefined {
    const fromAddress = this.#byAddress.get(address) ?? 0;
    if (this.#open >= this.caps.total) return this.#refuseAll();
    if (fromAddress >= this.caps.perAddress) return this.#refuseAddress(address, fromAddress);
    this.#open++;
    this.#byAddress.set(address, fromAddress + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#release(address);
    };
  }

  #release(address: string) {
    this.#open--;
    const left = this.#byAddress.get(address)! - 1;
    if (left === 0) this.#byAddress.delete(address);
    else this.#byAddress.set(address, left);
    if (left < this.caps.perAddress) this.#atAddressCap.delete(address);
    if (this.#shedding && this.#open < this.caps.total * 0.9) {
      this.#shedding = false;
      log.info("accepting connections again; {refused} were closed meanwhile", { refused: this.#refused });
      this.#refused = 0;
    }
  }

  #refuseAll(): undefined {
    this.#refused++;
    if (this.#shedding) return;
    this.#shedding = true;
    log.warn(
      "closing new connections: {open} open, the most this relay keeps with its open-file limit " +
        "(raise `ulimit -n`, or set --max-conns)",
      { open: this.#open },
    );
  }

  #refuseAddress(address: string, count: number): undefined {
    if (this.#atAddressCap.has(address)) return;
    this.#atAddressCap.add(address);
    log.warn("closing new connections from {address}: it holds {count}, the most one address may", {
      address,
      count,
    });
  }
}
