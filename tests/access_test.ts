/**
 * Who may reach a tunnel: basic auth and IP lists chosen by the client and
 * checked at the relay, and request-rate limits set on the relay.
 */
import assert from "node:assert/strict";
import { Processes, startClient, startOrigin, startRelay } from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";

/** Statuses and Retry-After headers of `count` requests to `url`, one after another. */
async function answers(url: string, count: number) {
  const seen = [];
  for (let i = 0; i < count; i++) {
    const response = await visit(url);
    seen.push({ status: response.status, retryAfter: response.headers.get("retry-after") });
    await response.body?.cancel();
  }
  return seen;
}

const basic = (credentials: string) => ({ authorization: `Basic ${btoa(credentials)}` });

Deno.test("basic auth and IP lists are enforced at the relay", async (t) => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const port = String(origin.port);
  const [locked, outsiders, denied, insiders] = await Promise.all([
    startClient(processes, relay, [port, "locked", "--basic-auth=ada:s3cret pass"], { label: "locked" }),
    startClient(processes, relay, [port, "outsiders", "--allow=10.0.0.0/8", "--allow=192.0.2.1"], {
      label: "outsiders",
    }),
    startClient(processes, relay, [port, "denied", "--deny=127.0.0.0/8"], { label: "denied" }),
    startClient(processes, relay, [port, "insiders", "--allow=127.0.0.0/8", "--deny=10.0.0.0/8"], {
      label: "insiders",
    }),
  ]).then((clients) => clients.map((client) => client.urls[0]));

  await t.step("no or wrong credentials get 401 with a challenge; the right ones get through", async () => {
    const none = await visit(`${locked}/echo`);
    assert.equal(none.status, 401);
    assert.match(none.headers.get("www-authenticate") ?? "", /Basic realm="reverprox tunnel"/);
    await none.body?.cancel();
    const wrong = await visit(`${locked}/echo`, { headers: basic("ada:nope") });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    const right = await visit(`${locked}/echo`, { headers: basic("ada:s3cret pass") });
    assert.equal(right.status, 200);
    assert.equal((await right.json()).target, "/echo");
  });
  await t.step("addresses outside the allow list or inside the deny list get 403", async () => {
    for (const url of [outsiders, denied]) {
      console.log("visiting", url);
      const response = await visit(`${url}/echo`);
      assert.equal(response.status, 403);
      assert.match(await response.text(), /127\.0\.0\.1 may not reach this tunnel/);
    }
    assert.equal((await visit(`${insiders}/`)).status, 200);
  });
});

Deno.test("a malformed access rule is refused when the tunnel registers", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const refused = await startClient(processes, relay, [String(origin.port), "odd", "--allow=not-an-address"])
    .catch((error) => error);
  assert.match(String(refused), /bad access rule for "odd"/);
});

Deno.test("request rates over the relay's limits get 429 with Retry-After", async (t) => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  await t.step("per tunnel", async () => {
    const relay = await startRelay(processes, { args: ["--rate-per-tunnel=5"] });
    const busy = (await startClient(processes, relay, [String(origin.port), "busy"])).urls[0];
    const calm =
      (await startClient(processes, relay, [String(origin.port), "calm"], { label: "calm" })).urls[0];
    const seen = await answers(`${busy}/`, 12);
    for (const { status, retryAfter } of seen) if (status === 429) assert.equal(retryAfter, "1");
    const statuses = seen.map(({ status }) => status);
    assert.ok(statuses.filter((s) => s === 429).length >= 5, `statuses ${statuses}`);
    assert.equal(statuses[0], 200);
    assert.equal((await visit(`${calm}/`)).status, 200, "another tunnel is not limited");
  });
  await t.step("per visitor IP", async () => {
    const relay = await startRelay(processes, { args: ["--rate-per-ip=3"] });
    const url =
      (await startClient(processes, relay, [String(origin.port), "shared"], { label: "ip" })).urls[0];
    const statuses = (await answers(`${url}/`, 8)).map(({ status }) => status);
    assert.deepEqual(statuses.slice(0, 3), [200, 200, 200]);
    assert.ok(statuses.slice(3).includes(429), `statuses ${statuses}`);
  });
});
