/**
 * The relay's state in one SQLite file in the state dir, through the built-in
 * `node:sqlite`: client tokens (`reverprox-server token add|list|revoke`), the
 * accounts of the optional sign-up API, and name reservations, so a restarted
 * relay keeps each name for its owner through the grace period.
 * Only SHA-256 hashes are stored; a token is shown once, when it is made. A
 * token may be limited to names matching a pattern (`team-*`) and to a number
 * of tunnels.
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
import { randomBytes, scryptSync, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { sha256Hex } from "./tokens.ts";

/** What the relay knows about one token. */
export interface TokenRecord {
  id: number;
  label: string;
  /** Glob (`*` = any run of characters) the token's http names must match; null = any. */
  namePattern: string | null;
  /** Most tunnels the token may hold at once; null = no limit. */
  maxTunnels: number | null;
  createdAt: string;
  revokedAt: string | null;
}

export class TokenStore {
  private constructor(private readonly db: DatabaseSync) {}

  /** Opens (or creates) `state.db` in `stateDir`. */
  static open(stateDir: string): TokenStore {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const db = new DatabaseSync(join(stateDir, "state.db"));
    // Reservations change with every tunnel that comes and goes: WAL keeps those writes cheap.
    db.exec("pragma journal_mode = wal; pragma synchronous = normal");
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
      revoked_at text
    )`);
    return new TokenStore(db);
  }

  /** Makes a new token; the plain token is returned here and never stored. */
  add(
    rule: { label: string; namePattern?: string; maxTunnels?: number },
  ): { token: string; record: TokenRecord } {
    const token = `rp_${randomBytes(24).toString("base64url")}`;
    const { lastInsertRowid } = this.db.prepare(
      "insert into tokens (label, hash, name_pattern, max_tunnels, created_at) values (?, ?, ?, ?, ?)",
    ).run(
      rule.label,
      sha256Hex(token),
      rule.namePattern ?? null,
      rule.maxTunnels ?? null,
      new Date().toISOString(),
    );
    return { token, record: this.#get(Number(lastInsertRowid))! };
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

  /** Registers `username`; false when the name is taken. The password is kept as a salted scrypt hash. */
  addUser(username: string, password: string): boolean {
    const salt = randomBytes(16);
    const stored = `${salt.toString("base64")}:${scryptSync(password, salt, 32).toString("base64")}`;
    const { changes } = this.db.prepare(
      "insert or ignore into users (username, password, created_at) values (?, ?, ?)",
    ).run(username, stored, new Date().toISOString());
    return Number(changes) > 0;
  }

  /** Whether `password` is `username`'s. */
  checkUser(username: string, password: string): boolean {
    const row = this.db.prepare("select password from users where username = ?").get(username);
    if (!row) return false;
    const [salt, hash] = String(row.password).split(":").map((part) => Buffer.from(part, "base64"));
    return timingSafeEqual(scryptSync(password, salt, 32), hash);
  }

  /** Remembers that `ownerKey` holds a name (`kind` "http" or "tcp"), so a restarted relay keeps it for them. */
  reserve(kind: string, name: string, ownerKey: string): void {
    this.db.prepare("insert or replace into reservations (kind, name, owner_key) values (?, ?, ?)")
      .run(kind, name, ownerKey);
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
}

const SELECT =
  "select id, label, name_pattern as namePattern, max_tunnels as maxTunnels, created_at as createdAt, revoked_at as revokedAt from tokens";

function toRecord(row: Record<string, unknown>): TokenRecord {
  return {
    id: Number(row.id),
    label: String(row.label),
    namePattern: row.namePattern === null ? null : String(row.namePattern),
    maxTunnels: row.maxTunnels === null ? null : Number(row.maxTunnels),
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
