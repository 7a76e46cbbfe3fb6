/**
 * Small promise helpers shared by the relay and the client.
 *
 * @example
 * ```ts
 * await withTimeout(fetch("http://127.0.0.1:8080/"), 5_000); // rejects with TimeoutError if no answer in 5 s
 * await delay(100);
 * ```
 * @module
 */

/** A wait that ran out of time. */
export class TimeoutError extends Error {
  /** What was waited for: `what` as given to {@link withTimeout}. */
  constructor(readonly what: string, ms: number) {
    super(`${what} timed out after ${ms} ms`);
    this.name = "TimeoutError";
  }
}

/** Resolves like `promise`, or rejects with `TimeoutError` after `ms`; `what` may say it at that moment. */
export function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  what: string | (() => string) = "operation",
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(typeof what === "string" ? what : what(), ms)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Resolves after `ms`, or early (without error) when `signal` aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    if (signal?.aborted) done();
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}

/**
 * A deadline that starts counting only once `start` settles (for example once
 * an upload has been sent), so a long upload does not eat the time to answer.
 * `cancel()` stops it; the promise then never resolves.
 */
export function deadlineAfter(
  start: Promise<unknown>,
  ms: number,
): { expired: Promise<"timeout">; cancel(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let cancelled = false;
  const expired = new Promise<"timeout">((resolve) => {
    const arm = () => {
      if (!cancelled) timer = setTimeout(() => resolve("timeout"), ms);
    };
    start.then(arm, arm);
  });
  return {
    expired,
    cancel() {
      cancelled = true;
      clearTimeout(timer);
    },
  };
}
