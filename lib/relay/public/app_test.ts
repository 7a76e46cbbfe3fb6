import assert from "node:assert/strict";
import { createPublicApp } from "./app.ts";
import { hostName, tunnelName } from "./middleware.ts";
import { DEFAULT_RELAY_OPTIONS } from "../relay.ts";
import type { Lookup } from "../registry.ts";

Deno.test("the tunnel name is the one label left of the relay's domain", () => {
  assert.equal(hostName("API.Tunnel.Example.com:8080"), "api.tunnel.example.com");
  assert.equal(hostName("[::1]:8080"), "::1");
  assert.equal(tunnelName("api.tunnel.example.com", "tunnel.example.com"), "api");
  assert.equal(tunnelName("tunnel.example.com", "tunnel.example.com"), undefined);
  assert.equal(tunnelName("api.evil.com", "tunnel.example.com"), null);
  assert.equal(tunnelName("example.com", "tunnel.example.com"), null);
  assert.equal(tunnelName(hostName("api.tunnel.example.com.:8080"), "tunnel.example.com"), "api");
  assert.equal(tunnelName(hostName("tunnel.example.com."), "tunnel.example.com"), undefined);
  assert.equal(tunnelName("a.b.tunnel.example.com", "tunnel.example.com"), "a.b");
});

Deno.test("the public app answers from its own pages without any tunnel (app.request, no socket)", async () => {
  const states: Record<string, Lookup<never>> = { gone: { state: "offline" } };
  const app = createPublicApp({
    ...DEFAULT_RELAY_OPTIONS,
    lookup: (name) => states[name] ?? { state: "unknown" },
    info: () => ({ relay: "reverprox" }),
    stats: () => ({}),
    draining: () => false,
    overloaded: () => false,
  });
  // What @hono/node-server's conninfo reads from a live connection.
  const env = {
    incoming: { socket: { remoteAddress: "203.0.113.1", remotePort: 40000, remoteFamily: "IPv4" } },
  };
  const status = async (host: string, path = "/", headers: Record<string, string> = {}) => {
    const response = await app.request(`http://${host}${path}`, { headers: { host, ...headers } }, env);
    return { status: response.status, code: response.headers.get("x-reverprox-error") };
  };
  assert.deepEqual(await status("nobody.localhost"), { status: 404, code: "unknown_tunnel" });
  assert.deepEqual(await status("gone.localhost"), { status: 503, code: "tunnel_offline" });
  assert.deepEqual(await status("localhost"), { status: 200, code: null });
  assert.deepEqual(await status("nobody.localhost", `/${"x".repeat(9000)}`), {
    status: 414,
    code: "uri_too_long",
  });
  assert.deepEqual(await status("nobody.localhost", "/", { "x-big": "y".repeat(40_000) }), {
    status: 431,
    code: "headers_too_large",
  });
  assert.deepEqual(await status("gone.localhost."), { status: 503, code: "tunnel_offline" });
  assert.deepEqual(await status("localhost."), { status: 200, code: null });
  assert.deepEqual(await status("evil.example"), { status: 421, code: "misdirected_request" });
  assert.deepEqual(await status("127.0.0.1:8080", "/.well-known/reverprox/status"), {
    status: 421,
    code: "misdirected_request",
  });
});
