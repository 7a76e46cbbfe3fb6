import assert from "node:assert/strict";
import { FairGate, LoopLag } from "./fair_gate.ts";

/** Whether `promise` has settled after the microtasks queued so far have run. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

Deno.test("a lone tunnel is never held back, even on an overloaded relay", async () => {
  const gate = new FairGate({ slots: 2, holdMs: 10_000, overloaded: () => true });
  const entries = Array.from({ length: 20 }, () => gate.enter("flood"));
  // Every one of the 20 is let in at once, well past the 2 slots a shared relay would allow.
  const admitted = await Promise.all(entries.map((entry) => settled(entry)));
  assert.deepEqual(admitted, Array(20).fill(true));
  for (const release of await Promise.all(entries)) release();
});

Deno.test("on an overloaded relay shared by two tunnels, a flood queues behind itself", async () => {
  const gate = new FairGate({ slots: 2, holdMs: 10_000, overloaded: () => true });
  const quiet = await gate.enter("quiet");
  const [first, second] = [await gate.enter("flood"), await gate.enter("flood")];
  const third = gate.enter("flood");
  assert.equal(await settled(third), false, "the flood's third request waits");
  // The quiet tunnel still gets straight in.
  const quietAgain = gate.enter("quiet");
  assert.equal(await settled(quietAgain), true);
  first();
  assert.equal(await settled(third), true, "a finished request hands its slot on");
  second();
  first(); // a second call gives nothing back twice
  (await third)();
  quiet();
  (await quietAgain)();
});

Deno.test("with time to spare, nobody is held back", async () => {
  const gate = new FairGate({ slots: 1, holdMs: 10_000, overloaded: () => false });
  const releases = [await gate.enter("quiet"), await gate.enter("flood")];
  const another = gate.enter("flood");
  assert.equal(await settled(another), true);
  [...releases, await another].forEach((release) => release());
});

Deno.test("a slow request gives its slot back after holdMs, so it never blocks the requests behind it", async () => {
  const gate = new FairGate({ slots: 1, holdMs: 30, overloaded: () => true });
  const quiet = await gate.enter("quiet");
  const slow = await gate.enter("flood");
  const next = gate.enter("flood");
  assert.equal(await settled(next), false);
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(await settled(next), true);
  [quiet, slow, await next].forEach((release) => release());
});

Deno.test("LoopLag sees a blocked event loop", async () => {
  const lag = new LoopLag(5);
  try {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const idle = lag.ms;
    for (let i = 0; i < 8; i++) {
      const until = performance.now() + 30;
      while (performance.now() < until) { /* busy: the timer cannot run */ }
      await new Promise((resolve) => setTimeout(resolve, 6));
    }
    assert.ok(lag.ms > idle + 5, `lag ${lag.ms} ms after blocking, ${idle} ms idle`);
  } finally {
    lag.stop();
  }
});
