import assert from "node:assert/strict";
import { isPunycode, isValidName, randomName } from "./names.ts";

Deno.test("names follow DNS label rules", () => {
  for (const good of ["a", "api", "my-app-2", "0", "a".repeat(63)]) {
    assert.ok(isValidName(good), good);
  }
  for (const bad of ["", "-a", "a-", "A", "a.b", "a_b", "ünï", "a".repeat(64), "a b", "a\r\n"]) {
    assert.ok(!isValidName(bad), bad);
  }
});

Deno.test("random names are valid labels", () => {
  for (let i = 0; i < 200; i++) assert.ok(isValidName(randomName()));
});

Deno.test("punycode names are told apart by their xn-- prefix", () => {
  for (const name of ["xn--pple-43d", "xn--80ak6aa92e"]) assert.ok(isPunycode(name), name);
  for (const name of ["api", "xn-api", "x-n--a", "axn--b"]) assert.ok(!isPunycode(name), name);
});
