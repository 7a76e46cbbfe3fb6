import assert from "node:assert/strict";
import { TunnelRegistry } from "./registry.ts";

Deno.test("a name held by one owner cannot be claimed by another", () => {
  const registry = new TunnelRegistry<string>(60_000);
  assert.deepEqual(registry.claim("api", "owner-1", "a"), { ok: true, replaced: undefined });
  assert.deepEqual(registry.claim("api", "owner-2", "b"), { ok: false });
  assert.deepEqual(registry.lookup("api"), { state: "online", session: "a" });
  registry.clear();
});

Deno.test("a dropped session's names stay reserved for the same owner only", () => {
  const registry = new TunnelRegistry<string>(60_000);
  registry.claim("api", "owner-1", "a");
  registry.hold("a");
  assert.deepEqual(registry.lookup("api"), { state: "offline" });
  assert.deepEqual(registry.claim("api", "owner-2", "b"), { ok: false });
  assert.deepEqual(registry.claim("api", "owner-1", "c"), { ok: true, replaced: undefined });
  assert.deepEqual(registry.lookup("api"), { state: "online", session: "c" });
  registry.clear();
});

Deno.test("the same owner reconnecting replaces its older live session", () => {
  const registry = new TunnelRegistry<string>(60_000);
  registry.claim("api", "owner-1", "a");
  assert.deepEqual(registry.claim("api", "owner-1", "b"), { ok: true, replaced: "a" });
  // The replaced session's end holds nothing: the name went with the newer one.
  assert.deepEqual(registry.hold("a"), []);
  assert.deepEqual(registry.lookup("api"), { state: "online", session: "b" });
  assert.deepEqual(registry.hold("b"), ["api"]);
  registry.clear();
});

Deno.test("names are recycled after the grace period and freed at once on goodbye", async () => {
  const registry = new TunnelRegistry<string>(20);
  registry.claim("api", "owner-1", "a");
  registry.claim("web", "owner-1", "a");
  registry.hold("a");
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.deepEqual(registry.lookup("api"), { state: "unknown" });
  registry.claim("api", "owner-2", "b");
  registry.release("b");
  assert.deepEqual(registry.lookup("api"), { state: "unknown" });
  assert.deepEqual(registry.size, 0);
});
