/**
 * Tunnel names: DNS labels (RFC 1123), and random readable ones for users who
 * don't pick.
 *
 * @example
 * ```ts
 * isValidName("api");        // true
 * isValidName("-api");       // false
 * isPunycode("xn--pple-43d"); // true
 * randomName();              // e.g. "brave-otter-42"
 * ```
 * @module
 */

/** Lowercase letters, digits and inner hyphens, 1–63 characters. */
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** True when `name` is a valid lowercase DNS label. */
export function isValidName(name: string): boolean {
  return LABEL.test(name);
}

/**
 * True for an IDNA A-label (`xn--…`): punycode that a browser shows as a
 * Unicode name, which can pass for another (`xn--pple-43d` is "аpple" with a
 * Cyrillic а). Relays refuse such names unless the operator allows them.
 */
export function isPunycode(name: string): boolean {
  return name.startsWith("xn--");
}

const ADJECTIVES = [
  "amber",
  "bold",
  "brave",
  "calm",
  "clever",
  "cosmic",
  "crisp",
  "eager",
  "fancy",
  "gentle",
  "happy",
  "jolly",
  "keen",
  "lively",
  "lucky",
  "mellow",
  "nimble",
  "proud",
  "quick",
  "quiet",
  "rapid",
  "shiny",
  "silent",
  "smart",
  "sunny",
  "swift",
  "tidy",
  "vivid",
  "witty",
  "zesty",
];
const NOUNS = [
  "badger",
  "beaver",
  "comet",
  "crane",
  "dolphin",
  "falcon",
  "fox",
  "gecko",
  "heron",
  "koala",
  "lemur",
  "lynx",
  "maple",
  "meadow",
  "moose",
  "otter",
  "panda",
  "pebble",
  "pine",
  "quokka",
  "raven",
  "river",
  "robin",
  "salmon",
  "spruce",
  "tiger",
  "walrus",
  "willow",
  "wombat",
  "zebra",
];

/** A random name like `brave-otter-42`: easy to read aloud, ~90,000 possibilities. */
export function randomName(): string {
  const pick = <T>(list: T[]) => list[Math.floor(Math.random() * list.length)];
  return `${pick(ADJECTIVES)}-${pick(NOUNS)}-${Math.floor(Math.random() * 100)}`;
}
