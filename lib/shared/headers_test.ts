import assert from "node:assert/strict";
import { endToEndHeaders, headerPairs, withForwarded } from "./headers.ts";

Deno.test("hop-by-hop headers and those named by Connection are dropped", () => {
  const pairs = endToEndHeaders([
    ["Connection", "keep-alive, X-Private"],
    ["Keep-Alive", "timeout=5"],
    ["Transfer-Encoding", "chunked"],
    ["Upgrade", "h2c"],
    ["X-Private", "1"],
    ["Accept", "*/*"],
  ]);
  assert.deepEqual(pairs, [["Accept", "*/*"]]);
});

Deno.test("each Set-Cookie stays a pair of its own", () => {
  const headers = new Headers();
  headers.append("set-cookie", "a=1, b");
  headers.append("set-cookie", "c=2");
  assert.deepEqual(headerPairs(headers), [["set-cookie", "a=1, b"], ["set-cookie", "c=2"]]);
});

Deno.test("Connection cannot name Host away", () => {
  const pairs = endToEndHeaders([
    ["Host", "api.example.com"],
    ["Connection", "close, host, X-Private"],
    ["X-Private", "1"],
  ]);
  assert.deepEqual(pairs, [["Host", "api.example.com"]]);
});

Deno.test("X-Forwarded-For appends; Proto, Host, X-Real-IP and Forwarded are the relay's", () => {
  const pairs = withForwarded(
    [
      ["x-forwarded-for", "10.0.0.1"],
      ["X-Forwarded-Proto", "ftp"],
      ["X-Real-IP", "10.9.9.9"],
      ["Forwarded", "for=10.9.9.9;proto=https"],
      ["accept", "a"],
    ],
    { remoteAddr: "203.0.113.7", proto: "https", host: "api.example.com" },
  );
  assert.deepEqual(pairs, [
    ["accept", "a"],
    ["x-forwarded-for", "10.0.0.1, 203.0.113.7"],
    ["x-forwarded-proto", "https"],
    ["x-forwarded-host", "api.example.com"],
    ["x-real-ip", "203.0.113.7"],
    ["forwarded", "for=203.0.113.7;proto=https;host=api.example.com"],
  ]);
});

Deno.test("Forwarded brackets IPv6 and quotes values that are not tokens", () => {
  const pairs = withForwarded([], { remoteAddr: "::1", proto: "http", host: "api.localhost:8080" });
  assert.deepEqual(pairs.find(([name]) => name === "forwarded"), [
    "forwarded",
    'for="[::1]";proto=http;host="api.localhost:8080"',
  ]);
});
