import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { hashPassword, passwordMatches, TokenStore } from "./token_store.ts";
import { sha256Hex } from "../../shared/hash.ts";

async function withStore(test: (store: TokenStore, dir: string) => void | Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "reverprox-store-" });
  const store = TokenStore.open(dir);
  try {
    await test(store, dir);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("usernames are refused when taken or when their names would overlap another user's", () =>
  withStore((store) => {
    for (const username of ["ada", "bob-dev"]) assert.equal(store.addUser(username, "hash"), null);
    assert.match(store.addUser("ada", "hash")!, /ada is taken/);
    assert.match(store.addUser("ada-prod", "hash")!, /ada-prod-\* would overlap ada-\* of user ada/);
    assert.match(store.addUser("bob", "hash")!, /bob-\* would overlap bob-dev-\* of user bob-dev/);
    for (const free of ["adam", "ad", "bob-de", "bob-devs", "dev"]) {
      assert.equal(store.usernameConflict(free), null, free);
    }
  }));

Deno.test("a new account token replaces the account's earlier ones and leaves other tokens alone", () =>
  withStore((store) => {
    const operator = store.add({ label: "ci", namePattern: "ci-*" });
    const rule = { label: "user:ada", namePattern: "ada-*", maxTunnels: 10 };
    const first = store.issueAccountToken("ada", rule);
    const second = store.issueAccountToken("ada", rule);
    assert.equal(store.verify(first.token), null);
    assert.equal(store.verify(second.token)?.account, "ada");
    assert.deepEqual(store.list().map((record) => record.id), [operator.record.id, second.record.id]);
  }));

Deno.test("a state.db from before accounts gets the column, and its sign-up tokens their account", async () => {
  const dir = await Deno.makeTempDir({ prefix: "reverprox-store-" });
  const old = new DatabaseSync(`${dir}/state.db`);
  old.exec(`create table users (username text primary key, password text not null, created_at text not null);
    create table tokens (id integer primary key, label text not null, hash text not null unique,
      name_pattern text, max_tunnels integer, created_at text not null, revoked_at text);
    insert into users values ('ada', 'x', '2026-01-01');
    insert into tokens (label, hash, name_pattern, max_tunnels, created_at) values
      ('ci', '${sha256Hex("ci")}', 'ci-*', 2, '2026-01-01'),
      ('user:ada', '${sha256Hex("ada-1")}', 'ada-*', 10, '2026-01-01'),
      ('user:ada', '${sha256Hex("ada-2")}', 'ada-*', 10, '2026-01-01'),
      ('user:eve', '${sha256Hex("eve")}', 'ada-*', null, '2026-01-01')`);
  old.close();
  const store = TokenStore.open(dir);
  try {
    assert.deepEqual(store.list().map((record) => record.account), [null, "ada", "ada", null]);
    store.issueAccountToken("ada", { label: "user:ada", namePattern: "ada-*", maxTunnels: 10 });
    assert.deepEqual(store.list().map((record) => record.label), ["ci", "user:eve", "user:ada"]);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("password hashing runs off the event loop", async () => {
  let worst = 0, last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 5);
  const started = performance.now();
  const stored = await hashPassword("correct horse");
  assert.ok(await passwordMatches("correct horse", stored));
  assert.ok(!await passwordMatches("wrong horse", stored));
  const hashing = (performance.now() - started) / 3;
  clearInterval(ticker);
  // One scrypt takes ~140 ms of CPU here; on the event loop the ticker would wait that long.
  assert.ok(
    worst < hashing / 2,
    `the event loop stalled ${worst.toFixed(1)} ms; one hash takes ${hashing} ms`,
  );
});
