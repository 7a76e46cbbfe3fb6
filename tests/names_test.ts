/** Punycode names (`xn--…`) for tunnels and sign-up users: refused unless the operator allows them. */
import assert from "node:assert/strict";
import { Processes, refusedClient, startClient, startOrigin, startRelay } from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";

function register(port: number, username: string) {
  return visit(`http://localhost:${port}/api/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password: "correct horse" }),
  });
}

Deno.test("punycode tunnel names and usernames are refused by default", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--registration"] });
  await refusedClient(
    processes,
    relay,
    [String(origin.port), "xn--pple-43d"],
    /"xn--pple-43d" is a punycode name.*\(--allow-punycode\) \(name_invalid\)/,
  );
  const refused = await register(relay.httpPort, "xn--80ak6aa92e");
  assert.equal(refused.status, 400);
  assert.match((await refused.json()).error, /must not start with xn-- \(punycode\)/);
});

Deno.test("with --allow-punycode they are accepted", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--registration", "--allow-punycode"] });
  const client = await startClient(processes, relay, [String(origin.port), "xn--pple-43d"]);
  assert.equal((await visit(`${client.urls[0]}/`)).status, 200);
  const registered = await register(relay.httpPort, "xn--80ak6aa92e");
  assert.equal(registered.status, 201);
  await registered.body?.cancel();
});
