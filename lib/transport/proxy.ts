/**
 * Which HTTP proxy, if any, the TCP transport goes through (with `CONNECT`):
 * the proxy for an `https:` URL (the carrier is TLS inside), else for an
 * `http:` one, as `proxy_env.ts` reads the variables.
 *
 * @example
 * ```ts
 * const route = proxyFor("relay.example.com", 4433, { HTTPS_PROXY: "http://proxy:3128" });
 * // { hostname: "proxy", port: 3128 }
 * ```
 * @module
 */
import { Buffer } from "node:buffer";
import { proxyFor as proxyUrlFor } from "./proxy_env.ts";
import type { ProxyRoute } from "./upgrade.ts";

/** The proxy for `hostname:port` under `env`, or undefined to connect directly; throws on a malformed proxy URL. */
export function proxyFor(
  hostname: string,
  port: number,
  env: Record<string, string | undefined>,
): ProxyRoute | undefined {
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  const url = proxyUrlFor(new URL(`https://${host}:${port}/`), env) ??
    proxyUrlFor(new URL(`http://${host}:${port}/`), env);
  return url && proxyRoute(url);
}

/** Where and how to reach the proxy `url` names (an `http:` URL, credentials for Basic auth in it). */
export function proxyRoute(url: URL): ProxyRoute {
  const credentials = url.username
    ? `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`
    : "";
  return {
    hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: Number(url.port || 80),
    authorization: credentials ? `Basic ${Buffer.from(credentials).toString("base64")}` : undefined,
  };
}
