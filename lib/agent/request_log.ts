/**
 * The plain request log: one line per request as it finishes (time, tunnel
 * when there are several, method, path, status, duration), built from the
 * agent's events.
 *
 * @example
 * ```ts
 * import type { Agent } from "./agent.ts";
 * declare const agent: Agent;
 * const stop = printRequestLog(agent.events, { showTunnel: true }); // "14:03:07 api GET /health 200 3 ms"
 * stop();
 * ```
 * @module
 */
import type { AgentEvents } from "./events.ts";

/** Prints a line for each finished request; returns the function that stops it. */
export function printRequestLog(
  events: AgentEvents,
  options: { showTunnel: boolean },
): () => void {
  const started = new Map<string, { method: string; target: string }>();
  const offStarted = events.on(
    "request-started",
    ({ id, method, target }) => started.set(id, { method, target }),
  );
  const offDone = events.on("request-done", ({ id, tunnel, status, durationMs }) => {
    const request = started.get(id);
    started.delete(id);
    if (!request) return;
    const time = new Date().toTimeString().slice(0, 8);
    const prefix = options.showTunnel ? `${tunnel} ` : "";
    console.log(
      `${time} ${prefix}${request.method} ${request.target} ${status} ${Math.round(durationMs)} ms`,
    );
  });
  return () => {
    offStarted();
    offDone();
  };
}
