/**
 * What the client forwards to: parsing `3000`, `host:port` or a URL into an
 * origin, checking that something listens there, and the keep-alive pool the
 * client talks to it through.
 *
 * @example
 * ```ts
 * parseOrigin("3000");                   // { protocol: "http:", hostname: "localhost", port: 3000 }
 * parseOrigin("https://127.0.0.1:8443"); // { protocol: "https:", hostname: "127.0.0.1", port: 8443 }
 * await probeOrigin(parseOrigin("3000")); // undefined, or why nothing answers
 * ```
 * @module
 */
import http from "node:http";
import https from "node:https";
import type { Duplex } from "node:stream";
import { hostPort } from "../shared/host_port.ts";

/** Where the client sends requests: the developer's local server. */
export interface Origin {
  protocol: "http:" | "https:";
  hostname: string;
  port: number;
}

/** A target the user typed that is not a port, host:port or http(s) URL. */
export class TargetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TargetError";
  }
}

/** The origin of a tunnel of `kind`: for TCP, a bare port is on 127.0.0.1. */
export function parseTarget(kind: "http" | "tcp", target: string): Origin {
  return kind === "tcp" && /^\d+$/.test(target) ? parseOrigin(`127.0.0.1:${target}`) : parseOrigin(target);
}

/** `3000` → localhost:3000; `host:port`; `http://…` or `https://…`. */
export function parseOrigin(target: string): Origin {
  const text = /^\d+$/.test(target)
    ? `http://localhost:${target}`
    : target.includes("://")
    ? target
    : `http://${target}`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TargetError(`"${target}" is not a port, host:port or URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TargetError(`"${target}": only http and https origins are supported`);
  }
  const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new TargetError(`"${target}": bad port`);
  }
  return { protocol: url.protocol, hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"), port };
}

/** `undefined` when a TCP connection to the origin opens, else a sentence saying why not. */
export async function probeOrigin(origin: Origin): Promise<string | undefined> {
  try {
    const conn = await Deno.connect({ hostname: origin.hostname, port: origin.port });
    conn.close();
    return undefined;
  } catch (error) {
    return `nothing answers at ${originLabel(origin)} (${(error as Error).message})`;
  }
}

/** `host:port` of the origin, as users typed it. */
export function originLabel(origin: Origin): string {
  return hostPort(origin.hostname, origin.port);
}

/** A keep-alive agent for talking to one origin, shared by all its requests. */
export function originAgent(origin: Origin): http.Agent {
  return dropSocketsThatTalkWhenIdle(
    origin.protocol === "https:"
      // The origin is the developer's own server; dev certificates are usually self-signed.
      ? new https.Agent({ keepAlive: true, rejectUnauthorized: false })
      : new http.Agent({ keepAlive: true }),
  );
}

/**
 * Makes `agent` destroy a pooled socket on which bytes arrive while no request is using it. An origin
 * that writes after its response ended (junk, or a body longer than its Content-Length) has left the
 * connection in a state no parser can trust: the next request on it would read those bytes as its answer.
 */
function dropSocketsThatTalkWhenIdle(agent: http.Agent): http.Agent {
  // @types/node says void; Node's documentation: a falsy result destroys the socket instead of pooling it.
  const keepSocketAlive = agent.keepSocketAlive.bind(agent) as (socket: Duplex) => boolean;
  const reuseSocket = agent.reuseSocket.bind(agent);
  const destroyIdle = function (this: Duplex) {
    this.destroy();
  };
  agent.keepSocketAlive = (socket: Duplex) => {
    if (!keepSocketAlive(socket)) return false;
    socket.on("data", destroyIdle);
    return true;
  };
  agent.reuseSocket = (socket, request) => {
    socket.off("data", destroyIdle);
    reuseSocket(socket, request);
  };
  return agent;
}
