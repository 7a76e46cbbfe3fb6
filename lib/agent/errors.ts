/**
 * The agent's one fatal error: the relay refused it for good (a bad token, a
 * taken name) or cannot be trusted. Everything else is retried.
 *
 * @example
 * ```ts
 * declare const error: unknown;
 * // Retrying cannot help: say why and exit.
 * if (error instanceof AgentError) console.error(`reverprox: ${error.message}`);
 * ```
 * @module
 */
import type { ErrorCode } from "../wire/protocol.ts";

/** The relay refused the agent for good, or cannot be trusted. */
export class AgentError extends Error {
  constructor(readonly code: ErrorCode | "untrusted", message: string) {
    super(message);
    this.name = "AgentError";
  }
}

/** The relay would not add, pause or resume a tunnel on the live connection; the agent carries on. */
export class TunnelRefused extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
    this.name = "TunnelRefused";
  }
}
