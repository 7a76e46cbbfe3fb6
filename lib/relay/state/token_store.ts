/**
 * The relay's state in one SQLite file in the state dir, through the built-in
 * `node:sqlite`: client tokens (`reverprox-server token add|list|revoke`), the
 * accounts of the optional sign-up API, and name reservations, so a restarted
 * relay keeps each name for its owner through the grace period. A running
 * relay holds `relay.lock` in the same dir, so a second one cannot share it.
 * Only SHA-256 hashes are stored; a token is shown once, when it is made. A
 * token may be limited to names matching a pattern (`team-*`) and to a number
 * of tunnels. A signed-up user's token belongs to their account, which holds
 * one live token at a time.
 *
 * @example
 * ```ts
 * const store = TokenStore.open("/var/lib/reverprox");
 * const { token } = store.add({ label: "ci", namePattern: "ci-*", maxTunnels: 2 });
 * store.verify(token); // { id: 1, label: "ci", namePattern: "ci-*", maxTunnels: 2, … }
 * ```
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import { promisify } from "node:util";
import { Buffer } from "node:buffer";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { sha256Hex } from "../../shared/hash.ts";

/** What the relay knows about one token. */
export interface TokenRecord {
  id: number;
  label: string;
  /** Glob (`*` = any run of characters) the token's http names must match; null = any. */
  namePattern: string | null;
  /** Most tunnels the token may hold at once; null = no limit. */
  maxTunnels: number | null;
  /** Most of those that may be TCP tunnels (each takes a public port); 0 = none, null = no limit. */
  maxTcpTunnels: number | null;
  /** The sign-up account the token was issued to; its caps count all the account's sessions. */
  account: string | null;
  /** May attach to other clients' tunnels as a debug receiver (`token add --debug`). */
  debug: boolean;
  createdAt: string;
  revokedAt: string | null;
}

/** What a new token may do. */
export interface TokenRule {
  label: string;
  namePattern?: string;
  maxTunnels?: number;
  maxTcpTunnels?: number;
  debug?: boolean;
}

/** The state dir or its database cannot be used; the message names the file and says what to do. */
export class StateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StateError";
  }
}

/** How long a write waits for another process's lock on state.db before it fails. */
const BUSY_TIMEOUT_MS = 1_500;

export class TokenStore {
  private constructor(private readonly db: DatabaseSync) {}

  /**
   * Opens (or creates) `state.db` in `stateDir`; a {@link StateError} naming
   * the file when it cannot be used (not a database, unreadable, locked).
   */
  static open(stateDir: string): TokenStore {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const path = join(stateDir, "state.db");
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(path);
      prepareSchema(db);
      return new TokenStore(db);
    } catch (error) {
      db?.close();
      throw new StateError(
        `state.db at ${path} cannot be used: ${(error as Error).message} ` +
          "(restore it from a backup, or move it aside to start with no tokens, accounts or reservations)",
      );
    }
  }

  /** Makes a new token; the plain token is returned here and never stored. */
  add(rule: TokenRule, account: string | null = null): { token: string; record: TokenRecord } {
    const token = `rp_${randomBytes(24).toString("base64url")}`;
    const { lastInsertRowid } = this.db.prepare(
      `insert into tokens (label, hash, name_pattern, max_tunnels, max_tcp_tunnels, account, may_debug, created_at)
       values (?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      rule.label,
      sha256Hex(token),
      rule.namePattern ?? null,
      rule.maxTunnels ?? null,
      rule.maxTcpTunnels ?? null,
      account,
      rule.debug ? 1 : 0,
      new Date().toISOString(),
    );
    return { token, record: this.#get(Number(lastInsertRowid))! };
  }

  /**
   * A new token for sign-up account `account`, replacing the ones issued to it
   * before (deleted, so the table holds one row per account however often its
   * owner logs in). Clients still connected with an old token stay up; they are
   * refused from their next connection.
   */
  issueAccountToken(account: string, rule: TokenRule): { token: string; record: TokenRecord } {
    return this.#transaction(() => {
      const issued = this.add(rule, account);
      this.db.prepare("delete from tokens where account = ? and id != ?").run(account, issued.record.id);
      return issued;
    });
  }

  list(): TokenRecord[] {
    return this.db.prepare(`${SELECT} order by id`).all().map(toRecord);
  }

  /** Revokes token `id`; false when there is no such live token. */
  revoke(id: number): boolean {
    const { changes } = this.db.prepare(
      "update tokens set revoked_at = ? where id = ? and revoked_at is null",
    )
      .run(new Date().toISOString(), id);
    return Number(changes) > 0;
  }

  /** The live record for `token`, or null. */
  verify(token: string): TokenRecord | null {
    const row = this.db.prepare(`${SELECT} where hash = ? and revoked_at is null`).get(sha256Hex(token));
    return row ? toRecord(row) : null;
  }

  /** Whether any token was ever made: then the relay stays closed to clients without a live one. */
  hasTokens(): boolean {
    return this.db.prepare("select 1 from tokens limit 1").get() !== undefined;
  }

  /**
   * Why `username` cannot be registered, or null when it can. Each user gets
   * the names `<username>-*`; namespaces must be disjoint, or one user's token
   * could take another's names. A name in both `a-*` and `b-*` starts with
   * `a-` and with `b-`, so one of these is a prefix of the other: for `a` ≠ `b`
   * (`a` shorter) `b` starts with `a-`. So a username is refused when it is
   * taken, extends another with a hyphen (`ada-prod` when `ada` exists) or is
   * extended by another (`ada` when `ada-prod` exists); every pair of users
   * registered under this rule has disjoint namespaces.
   */
  usernameConflict(username: string): string | null {
    // Usernames are DNS labels (a-z, 0-9, -): no LIKE wildcards (% _) can occur in them.
    const row = this.db.prepare(
      `select username from users where username = ?1 or ?1 like username || '-%' or username like ?1 || '-%'
       limit 1`,
    ).get(username);
    if (!row) return null;
    const other = String(row.username);
    return other === username
      ? `username ${username} is taken`
      : `username ${username} is not available: its names ${username}-* would overlap ${other}-* of user ${other}`;
  }

  /**
   * Registers `username` with a password hash from {@link hashPassword}; the
   * conflict (see {@link usernameConflict}) when it cannot, else null.
   */
  addUser(username: string, passwordHash: string): string | null {
    return this.#transaction(() => {
      const conflict = this.usernameConflict(username);
      if (conflict) return conflict;
      this.db.prepare("insert into users (username, password, created_at) values (?, ?, ?)")
        .run(username, passwordHash, new Date().toISOString());
      return null;
    });
  }

  /** `username`'s stored password hash, or null when there is no such user. */
  passwordHash(username: string): string | null {
    const row = this.db.prepare("select password from users where username = ?").get(username);
    return row ? String(row.password) : null;
  }

  /**
   * Remembers that `ownerKey` holds these names (`kind` "http" or "tcp"), so a
   * restarted relay keeps them for it: all of them or, when it throws, none.
   */
  reserve(names: { kind: string; name: string }[], ownerKey: string): void {
    if (names.length === 0) return;
    const insert = this.db.prepare(
      "insert or replace into reservations (kind, name, owner_key) values (?, ?, ?)",
    );
    this.#transaction(() => {
      for (const { kind, name } of names) insert.run(kind, name, ownerKey);
    });
  }

  unreserve(kind: string, name: string): void {
    this.db.prepare("delete from reservations where kind = ? and name = ?").run(kind, name);
  }

  reservations(kind: string): { name: string; ownerKey: string }[] {
    return this.db.prepare("select name, owner_key as ownerKey from reservations where kind = ?").all(kind)
      .map((row) => ({ name: String(row.name), ownerKey: String(row.ownerKey) }));
  }

  close(): void {
    this.db.close();
  }

  #get(id: number): TokenRecord | null {
    const row = this.db.prepare(`${SELECT} where id = ?`).get(id);
    return row ? toRecord(row) : null;
  }

  #transaction<T>(work: () => T): T {
    this.db.exec("begin immediate");
    try {
      const result = work();
      this.db.exec("commit");
      return result;
    } catch (error) {
      this.db.exec("rollback");
      throw error;
    }
  }
}

/** How long taking the state dir's lock may take before it counts as held by another relay. */
const LOCK_WAIT_MS = 1_000;

/**
 * Takes `stateDir` for this relay process, so two relays cannot delete each
 * other's reservations: an exclusive OS lock (flock) on `relay.lock`, which
 * the kernel drops when the process ends however it ends, so a killed relay
 * leaves no stale lock behind; the file names the holder's pid. Deno's
 * `lock()` waits for the lock and has no try-only form, so a lock that does
 * not come within {@link LOCK_WAIT_MS} counts as held: then this throws a
 * {@link StateError} (the caller exits; the pending wait goes with it).
 * `reverprox-server token …` commands do not take this lock.
 */
export async function lockStateDir(stateDir: string): Promise<Deno.FsFile> {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const path = join(stateDir, "relay.lock");
  const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const locked = await Promise.race([
    file.lock(true).then(() => true),
    new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), LOCK_WAIT_MS)),
  ]);
  clearTimeout(timer);
  if (!locked) {
    // The holder writes its pid just after locking; an empty file means it is that far.
    const pid = (await Deno.readTextFile(path)).trim() || "unknown";
    throw new StateError(
      `another relay (pid ${pid}) is using the state dir ${stateDir}; stop it first, or give this one its own --state-dir`,
    );
  }
  await file.truncate(0);
  await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  return file;
}

/** Makes the tables, or brings those of an older relay up to date. */
function prepareSchema(db: DatabaseSync) {
  // Reservations change with every tunnel that comes and goes: WAL keeps those writes cheap.
  // Another process writing (`reverprox-server token add`) holds the lock for milliseconds: wait
  // that out rather than fail. The wait blocks the event loop, hence short.
  db.exec(
    `pragma busy_timeout = ${BUSY_TIMEOUT_MS}; pragma journal_mode = wal; pragma synchronous = normal`,
  );
  db.exec(`create table if not exists users (
    username text primary key,
    password text not null,
    created_at text not null
  )`);
  db.exec(`create table if not exists reservations (
    kind text not null,
    name text not null,
    owner_key text not null,
    primary key (kind, name)
  )`);
  db.exec(`create table if not exists tokens (
    id integer primary key,
    label text not null,
    hash text not null unique,
    name_pattern text,
    max_tunnels integer,
    created_at text not null,
    revoked_at text,
    account text,
    max_tcp_tunnels integer,
    may_debug integer not null default 0
  )`);
  migrate(db);
}

/**
 * Brings a `state.db` made by an older relay up to date: columns added since,
 * and the account of sign-up tokens made before tokens had one (their label
 * is `user:<username>` and their pattern `<username>-*`).
 */
function migrate(db: DatabaseSync) {
  const columns = new Set(db.prepare("pragma table_info(tokens)").all().map((row) => String(row.name)));
  if (!columns.has("account")) {
    db.exec(`begin immediate;
      alter table tokens add column account text;
      update tokens set account = substr(label, 6)
        where label like 'user:%' and substr(label, 6) in (select username from users)
          and name_pattern = substr(label, 6) || '-*';
      commit`);
  }
  if (!columns.has("max_tcp_tunnels")) db.exec("alter table tokens add column max_tcp_tunnels integer");
  if (!columns.has("may_debug")) {
    db.exec("alter table tokens add column may_debug integer not null default 0");
  }
  db.exec("create index if not exists tokens_by_account on tokens (account)");
}

const SELECT = `select id, label, name_pattern as namePattern, max_tunnels as maxTunnels,
  max_tcp_tunnels as maxTcpTunnels, account, may_debug as debug, created_at as createdAt, revoked_at as revokedAt from tokens`;

function toRecord(row: Record<string, unknown>): TokenRecord {
  return {
    id: Number(row.id),
    label: String(row.label),
    namePattern: row.namePattern === null ? null : String(row.namePattern),
    maxTunnels: row.maxTunnels === null ? null : Number(row.maxTunnels),
    maxTcpTunnels: row.maxTcpTunnels === null ? null : Number(row.maxTcpTunnels),
    account: row.account === null ? null : String(row.account),
    debug: row.debug === 1 || row.debug === 1n,
    createdAt: String(row.createdAt),
    revokedAt: row.revokedAt === null ? null : String(row.revokedAt),
  };
}

/** Whether `name` matches a glob where `*` stands for any run of characters. */
export function matchesPattern(name: string, pattern: string): boolean {
  const regex = new RegExp(
    `^${pattern.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`,
  );
  return regex.test(name);
}

const scryptAsync = promisify(scrypt) as (password: string, salt: Buffer, length: number) => Promise<Buffer>;

/**
 * A salted scrypt hash of `password`, as stored in `users`. node:crypto's
 * async scrypt runs on a thread pool under Deno, not on the event loop
 * (measured: a 140 ms hash moves the loop by ~2 ms, `scryptSync` by 140).
 */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  return `${salt.toString("base64")}:${(await scryptAsync(password, salt, 32)).toString("base64")}`;
}

/** Whether `password` hashes to `stored` (from {@link hashPassword}), off the event loop. */
export async function passwordMatches(password: string, stored: string): Promise<boolean> {
  const [salt, hash] = stored.split(":").map((part) => Buffer.from(part, "base64"));
  return timingSafeEqual(await scryptAsync(password, salt, 32), hash);
}
