/** The sign-up API of an open relay: register, log in, and use the token it hands out. */
import assert from "node:assert/strict";
import { Processes, refusedClient, startClient, startOrigin, startRelay } from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";

function post(port: number, path: string, body: unknown) {
  return fetch(`http://127.0.0.1:${port}${path}`, { method: "POST", body: JSON.stringify(body) });
}

Deno.test("register and log in over HTTP; the token is limited to the user's names", async (t) => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--registration"] });
  let token = "";
  await t.step("register: 201 with a token, 409 when taken, 400 for bad input", async () => {
    const created = await post(relay.httpPort, "/api/register", {
      username: "ada",
      password: "correct horse",
    });
    assert.equal(created.status, 201);
    const body = await created.json();
    assert.match(body.token, /^rp_/);
    assert.equal(body.names, "ada-*");
    const taken = await post(relay.httpPort, "/api/register", { username: "ada", password: "another one" });
    assert.equal(taken.status, 409);
    await taken.body?.cancel();
    for (
      const bad of [{ username: "Not_A_Label", password: "long enough" }, {
        username: "bob",
        password: "short",
      }, "nonsense"]
    ) {
      const response = await post(relay.httpPort, "/api/register", bad);
      assert.equal(response.status, 400);
      await response.body?.cancel();
    }
  });
  await t.step("auth: 401 for a wrong password, 200 with a fresh token for the right one", async () => {
    const wrong = await post(relay.httpPort, "/api/auth", { username: "ada", password: "wrong horse" });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    const right = await post(relay.httpPort, "/api/auth", { username: "ada", password: "correct horse" });
    assert.equal(right.status, 200);
    token = (await right.json()).token;
  });
  await t.step("the token opens ada-* tunnels and nothing else", async () => {
    const client = await startClient(processes, relay, [String(origin.port), "ada-blog", `--token=${token}`]);
    assert.equal((await visit(`${client.urls[0]}/`)).status, 200);
    await refusedClient(
      processes,
      relay,
      [String(origin.port), "bob-blog", `--token=${token}`],
      /may only use names matching ada-\* \(not_permitted\)/,
      { label: "other" },
    );
  });
});

Deno.test("password guessing against the sign-up API is throttled per address", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { args: ["--registration"] });
  const statuses = [];
  for (let i = 0; i < 15; i++) {
    const response = await post(relay.httpPort, "/api/auth", {
      username: "ada",
      password: `guess-${i}-guess`,
    });
    statuses.push(response.status);
    await response.body?.cancel();
  }
  assert.equal(statuses[0], 401);
  assert.ok(statuses.includes(429), `statuses ${statuses}`);
});

Deno.test("with registration off the sign-up API answers 403", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  for (const path of ["/api/register", "/api/auth"]) {
    const response = await post(relay.httpPort, path, { username: "ada", password: "correct horse" });
    assert.equal(response.status, 403);
    await response.body?.cancel();
  }
});
