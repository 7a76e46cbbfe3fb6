/**
 * This build's version, shown by `--version` on both programs and in the agent's status.
 *
 * @example
 * ```ts
 * console.log(`reverprox ${VERSION}`);
 * ```
 * @module
 */

/** The release version; the release workflow checks a tag against it. */
export const VERSION = "0.3.0";
