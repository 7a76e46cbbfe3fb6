/**
 * Logging for both binaries, on `@logtape/logtape`: diagnostics go to stderr as
 * text lines, so stdout stays for what the user asked for (URLs, request lines).
 *
 * @example
 * ```ts
 * setupLogging("info");
 * getLogger(["reverprox", "relay"]).info("listening on {port}", { port: 8080 });
 * ```
 * @module
 */
import {
  configureSync,
  getLogger,
  getTextFormatter,
  isLogLevel,
  type LogLevel,
  type LogRecord,
} from "@logtape/logtape";

export { getLogger };
export type { LogLevel };

const encoder = new TextEncoder();

/** Routes every `reverprox` logger at `level` and above to stderr. */
export function setupLogging(level: string): void {
  if (!isLogLevel(level)) {
    throw new Error(`unknown log level "${level}" (trace, debug, info, warning, error, fatal)`);
  }
  const format = getTextFormatter({ timestamp: "time", category: ".", value: "bare" });
  configureSync({
    reset: true,
    sinks: {
      stderr: (record: LogRecord) => {
        Deno.stderr.writeSync(encoder.encode(format(record)));
      },
    },
    loggers: [
      { category: ["reverprox"], lowestLevel: level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}
