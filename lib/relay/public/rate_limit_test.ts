import assert from "node:assert/strict";
import { RateLimiter } from "./rate_limit.ts";

Deno.test("a bucket allows one second's worth, then refills with time", () => {
  let now = 0;
  const limiter = new RateLimiter(5, () => now);
  for (let i = 0; i < 5; i++) assert.ok(limiter.take("a"));
  assert.equal(limiter.take("a"), false);
  assert.ok(limiter.take("b"), "other keys have their own bucket");
  now += 200;
  assert.ok(limiter.take("a"), "200 ms buys one more request at 5/s");
  assert.equal(limiter.take("a"), false);
});

Deno.test("a rate of 0 means no limit", () => {
  const limiter = new RateLimiter(0);
  for (let i = 0; i < 1000; i++) assert.ok(limiter.take("a"));
});
