/**
 * The CLI's side of the control API: every `reverprox` command that talks to
 * a running agent goes through this, and nothing else.
 *
 * @example
 * ```ts
 * const api = new AgentApiClient("http://127.0.0.1:4040");
 * for (const tunnel of await api.list()) console.log(tunnel.name, tunnel.state);
 * ```
 * @module
 */
import type { AddTunnel, AgentStatus, TunnelView } from "./control.ts";

/** A refusal from the agent's API (its stable code and message), or no agent there. */
export class ApiError extends Error {
  constructor(readonly code: string, message: string, readonly status = 0) {
    super(message);
    this.name = "ApiError";
  }
}

/** How long a call may take before the agent counts as not answering. */
const CALL_TIMEOUT_MS = 15_000;

export class AgentApiClient {
  constructor(readonly base: string) {}

  status(): Promise<AgentStatus> {
    return this.#call("GET", "/api/status");
  }

  list(): Promise<TunnelView[]> {
    return this.#call("GET", "/api/tunnels");
  }

  add(tunnel: AddTunnel): Promise<TunnelView> {
    return this.#call("POST", "/api/tunnels", tunnel);
  }

  remove(name: string): Promise<void> {
    return this.#call("DELETE", `/api/tunnels/${encodeURIComponent(name)}`, {});
  }

  suspend(name: string): Promise<TunnelView> {
    return this.#call("POST", `/api/tunnels/${encodeURIComponent(name)}/suspend`, {});
  }

  resume(name: string): Promise<TunnelView> {
    return this.#call("POST", `/api/tunnels/${encodeURIComponent(name)}/resume`, {});
  }

  /** Calls `onEvent` with each of the agent's events (about `tunnel`, when given) until `signal` aborts. */
  async follow(
    tunnel: string | undefined,
    onEvent: (name: string, data: unknown) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const query = tunnel ? `?tunnel=${encodeURIComponent(tunnel)}` : "";
    const response = await fetch(`${this.base}/api/events${query}`, { signal });
    if (!response.ok || !response.body) {
      throw new ApiError("not_found", `the agent has no event stream (${response.status})`);
    }
    let pending = "";
    try {
      for await (const text of response.body.pipeThrough(new TextDecoderStream())) {
        const blocks = (pending + text).split("\n\n");
        pending = blocks.pop()!;
        for (const block of blocks) {
          const name = block.match(/^event: (.*)$/m)?.[1];
          const data = block.match(/^data: (.*)$/m)?.[1];
          if (name && data) onEvent(name, JSON.parse(data));
        }
      }
    } catch (error) {
      if (!signal.aborted) throw error;
    }
  }

  async #call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let response: Response;
    try {
      response = await fetch(`${this.base}${path}`, {
        method,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
      });
    } catch (error) {
      throw new ApiError("unreachable", `no agent answers at ${this.base} (${(error as Error).message})`);
    }
    if (response.status === 204) return undefined as T;
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      const { code = "internal", message = `HTTP ${response.status}` } = answer?.error ?? {};
      throw new ApiError(code, message, response.status);
    }
    return answer as T;
  }
}
