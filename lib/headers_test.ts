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

Deno.test("X-Forwarded-For appends, Proto and Host are replaced", () => {
  const pairs = withForwarded(
    [["x-forwarded-for", "10.0.0.1"], ["X-Forwarded-Proto", "ftp"], ["accept", "a"]],
    { remoteAddr: "203.0.113.7", proto: "https", host: "api.example.com" },
  );
  assert.deepEqual(pairs, [
    ["accept", "a"],
    ["x-forwarded-for", "10.0.0.1, 203.0.113.7"],
    ["x-forwarded-proto", "https"],
    ["x-forwarded-host", "api.example.com"],
  ]);
});
