/**
 * Debug routing: a second client, with a token that has the `debug` permission,
 * attaches to a tunnel another client holds (`reverprox PORT NAME --debug`);
 * requests marked with its debug id (header, or the cookie its URL sets) go to
 * it, all others to the tunnel's owner. Two origins tell which client answered.
 */
import assert from "node:assert/strict";
import {
  Child,
  Processes,
  refusedClient,
  spawnClient,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { eventually, visit } from "./helpers/visit.ts";

async function addToken(processes: Processes, stateDir: string, ...args: string[]): Promise<string> {
  const child = processes.add(
    Child.script("token", "server.ts", ["token", "add", ...args, `--state-dir=${stateDir}`]),
  );
  const status = await child.status;
  assert.equal(status.code, 0, child.output());
  return child.lines[0];
}

/** How many requests each origin has had so far (asked of the origins directly). */
async function seen(ports: number[]): Promise<number[]> {
  return await Promise.all(ports.map(async (port) => {
    const response = await fetch(`http://127.0.0.1:${port}/seen`);
    return (await response.json()).seen as number;
  }));
}

/** Which origin answered a request `send` makes: 0 (the owner's) or 1 (the debug receiver's). */
async function answeredBy(ports: number[], send: () => Promise<Response>): Promise<number> {
  const before = await seen(ports);
  const response = await send();
  await response.body?.cancel();
  assert.equal(response.status, 200);
  const after = await seen(ports);
  const changed = after.map((count, i) => count - before[i]);
  assert.equal(changed.reduce((a, b) => a + b), 1, `one origin answered: ${changed}`);
  return changed.indexOf(1);
}

Deno.test("debug routing: marked requests reach the debug receiver, others the owner; permission, cookie, fallback", async (t) => {
  await using processes = new Processes();
  const stateDir = await processes.tempDir();
  const ownerToken = await addToken(processes, stateDir, "--label=owner");
  const debugToken = await addToken(processes, stateDir, "--label=dev", "--debug");
  const listed = processes.add(
    Child.script("list", "server.ts", ["token", "list", `--state-dir=${stateDir}`]),
  );
  await listed.status;
  assert.match(listed.output(), /2\tdev\t.*\tdebug\t/, "token list shows the permission");
  const origins = [await startOrigin(processes), await startOrigin(processes)];
  const ports = origins.map((origin) => origin.port);
  const relay = await startRelay(processes, { stateDir });
  const owner = await startClient(processes, relay, [
    String(ports[0]),
    "api",
    `--token=${ownerToken}`,
    "--log",
  ]);
  const url = owner.urls[0];

  await t.step("a token without the debug permission is refused with a clear error", async () => {
    await refusedClient(
      processes,
      relay,
      [String(ports[1]), "api", "--debug", `--token=${ownerToken}`],
      /token "owner" has no debug permission .*token add --debug.*\(not_permitted\)/,
      { label: "no-permission" },
    );
  });
  await t.step("a debug receiver without a tunnel to attach to says so, and keeps trying", async () => {
    const { child } = await spawnClient(
      processes,
      relay,
      [String(ports[1]), "nobody-here", "--debug", `--token=${debugToken}`, "--log"],
      { label: "no-tunnel" },
    );
    await child.waitFor(
      /no tunnel "nobody-here" to attach to; start its main client first \(unknown_tunnel\)/,
    );
    await child.stop();
  });

  const receiver = await startClient(
    processes,
    relay,
    [String(ports[1]), "api", "--debug", `--token=${debugToken}`, "--log"],
    { label: "debug" },
  );
  const [, debugId] = await receiver.child.waitFor(/debug id (\w+)/);
  const debugUrl = receiver.urls[0];
  assert.equal(debugUrl, `${url}/.reverprox/debug/${debugId}`);

  await t.step("the header routes to the receiver; unmarked and unknown ids go to the owner", async () => {
    assert.equal(await answeredBy(ports, () => visit(`${url}/echo`)), 0);
    assert.equal(
      await answeredBy(ports, () => visit(`${url}/echo`, { headers: { "x-reverprox-debug": debugId } })),
      1,
    );
    assert.equal(
      await answeredBy(ports, () => visit(`${url}/echo`, { headers: { "x-reverprox-debug": "nope" } })),
      0,
    );
  });

  let cookie = "";
  await t.step("the debug URL sets a cookie that routes to the receiver; /off clears it", async () => {
    const page = await visit(debugUrl);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /now go to debug receiver/);
    cookie = page.headers.get("set-cookie")!.split(";")[0];
    assert.equal(cookie, `reverprox_debug=${debugId}`);
    assert.equal(
      await answeredBy(ports, () => visit(`${url}/echo`, { headers: { cookie: `a=1; ${cookie}` } })),
      1,
    );
    const off = await visit(`${url}/.reverprox/debug/off`);
    await off.body?.cancel();
    assert.match(off.headers.get("set-cookie")!, /^reverprox_debug=; .*Max-Age=0/);
    const unknown = await visit(`${url}/.reverprox/debug/0123abcd`);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.headers.get("x-reverprox-error"), "unknown_debug_id");
    assert.equal(unknown.headers.get("set-cookie"), null, "no cookie for an unknown id");
    await unknown.body?.cancel();
  });

  await t.step("removing the tunnel from the receiver's agent detaches it at the relay", async () => {
    const [, api] = await receiver.child.waitFor(/control API and inspector at (\S+)/);
    const removed = await fetch(`${api}/api/tunnels/api`, {
      method: "DELETE",
      headers: { "content-type": "application/json" },
    });
    assert.equal(removed.status, 204, await removed.text());
    assert.equal(await answeredBy(ports, () => visit(`${url}/echo`, { headers: { cookie } })), 0);
    const added = await fetch(`${api}/api/tunnels`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ kind: "http", name: "api", target: String(ports[1]), options: { debug: true } }),
    });
    assert.equal(added.status, 201, await added.text());
    assert.equal(await answeredBy(ports, () => visit(`${url}/echo`, { headers: { cookie } })), 1);
  });

  await t.step("when the receiver leaves, its marked requests go to the owner again", async () => {
    await receiver.child.stop();
    assert.equal(await answeredBy(ports, () => visit(`${url}/echo`, { headers: { cookie } })), 0);
    await eventually(`${url}/.reverprox/debug/${debugId}`, 404);
  });

  await t.step("when the owner leaves, a receiver does not take the tunnel over", async () => {
    const again = await startClient(
      processes,
      relay,
      [String(ports[1]), "api", "--debug", `--token=${debugToken}`, "--log"],
      // The same install and token: the same debug id, so visitors' cookies keep working.
      { label: "debug-again", configDir: receiver.configDir },
    );
    await again.child.waitFor(new RegExp(`debug id ${debugId}`));
    assert.equal(await answeredBy(ports, () => visit(`${url}/echo`, { headers: { cookie } })), 1, "same id");
    await owner.child.stop();
    const before = await seen(ports);
    for (const headers of [{}, { cookie }] as Record<string, string>[]) {
      const response = await visit(`${url}/echo`, { headers });
      await response.body?.cancel();
      assert.equal(response.status, 404, "the name was freed with its owner");
    }
    assert.deepEqual(await seen(ports), before, "nothing reached either origin");
  });
});
