/**
 * install.sh, the real script, run by `sh` (dash on Debian) and by `bash` against a fake release
 * served over HTTP on loopback: small shell scripts stand in for the binaries, and the SHA256SUMS
 * is made here. It installs the build for this machine, refuses tampered or unlisted files
 * without touching what is installed, and says clearly what is missing.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { Child, Processes, ROOT } from "./helpers/processes.ts";

const run = promisify(execFile);
const SHELLS = ["sh", "bash"];
const HOST = Deno.build.target;
/** The release's Unix targets (Windows users are sent to the .exe), and this machine's. */
const TARGETS = [
  ...new Set([
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
    HOST,
  ]),
];

/** The absolute path of `tool`: a test may run install.sh with a PATH that lacks it. */
const which = async (tool: string) => (await run("sh", ["-c", `command -v ${tool}`])).stdout.trim();
const hex = (bytes: ArrayBuffer) =>
  Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
const fakeBinary = (name: string) => new TextEncoder().encode(`#!/bin/sh\necho "${name} 9.9.9-test"\n`);

/** A release on a loopback HTTP server; it records every path asked for. */
class FakeRelease implements AsyncDisposable {
  readonly files = new Map<string, Uint8Array<ArrayBuffer>>();
  readonly requested: string[] = [];
  readonly #server: Deno.HttpServer<Deno.NetAddr>;

  /** Serves `reverprox-<t>` and `reverprox-server-<t>` for each target, with a matching SHA256SUMS. */
  static async start(targets = TARGETS): Promise<FakeRelease> {
    const release = new FakeRelease();
    const sums: string[] = [];
    for (const name of targets.flatMap((t) => [`reverprox-${t}`, `reverprox-server-${t}`])) {
      release.files.set(name, fakeBinary(name.replace(/-(x86_64|aarch64)-.*/, "")));
      sums.push(`${hex(await crypto.subtle.digest("SHA-256", release.files.get(name)!))}  ${name}\n`);
    }
    release.files.set("SHA256SUMS", new TextEncoder().encode(sums.join("")));
    return release;
  }

  private constructor() {
    this.#server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
      const name = new URL(request.url).pathname.replace("/releases/v9.9.9/", "");
      this.requested.push(name);
      const body = this.files.get(name);
      return body ? new Response(body) : new Response("Not Found", { status: 404 });
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}/releases/v9.9.9`;
  }

  async [Symbol.asyncDispose]() {
    await this.#server.shutdown();
  }
}

/** Runs install.sh with `shell`, HOME in a temp dir unless `env` says otherwise. */
async function install(
  processes: Processes,
  shell: string,
  env: Record<string, string>,
  args: string[] = [],
): Promise<{ code: number; out: string }> {
  const home = await processes.tempDir();
  const child = processes.add(
    new Child(shell, await which(shell), [join(ROOT, "install.sh"), ...args], { HOME: home, ...env }),
  );
  const { code } = await child.status;
  await child.stop();
  return { code, out: child.lines.join("\n") };
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return names.sort();
}

/** A directory with a `uname` that reports `os` and `cpu`, to put first on PATH. */
async function fakeUname(processes: Processes, os: string, cpu: string): Promise<string> {
  const dir = await processes.tempDir();
  const script = `#!/bin/sh\ncase "$1" in -s) echo '${os}' ;; -m) echo '${cpu}' ;; esac\n`;
  await Deno.writeTextFile(join(dir, "uname"), script, { mode: 0o755 });
  return dir;
}

/** A directory with only the tools install.sh needs, plus `extra`: the whole PATH of a bare machine. */
async function bareTools(processes: Processes, extra: string[]): Promise<string> {
  const dir = await processes.tempDir();
  for (const tool of ["uname", "mktemp", "mkdir", "cp", "mv", "rm", "chmod", ...extra]) {
    await Deno.symlink(await which(tool), join(dir, tool));
  }
  return dir;
}

async function runs(path: string): Promise<string> {
  return (await run(path, ["--version"])).stdout.trim();
}

for (const shell of SHELLS) {
  Deno.test(`${shell}: installs this machine's client into REVERPROX_INSTALL_DIR and says what it did`, async () => {
    await using processes = new Processes();
    await using release = await FakeRelease.start();
    const dir = join(await processes.tempDir(), "new", "bin");
    const { code, out } = await install(processes, shell, {
      REVERPROX_RELEASE_URL: release.url,
      REVERPROX_INSTALL_DIR: dir,
    });
    assert.equal(code, 0, out);
    assert.deepEqual(await listDir(dir), ["reverprox"]);
    assert.equal(await runs(join(dir, "reverprox")), "reverprox 9.9.9-test");
    assert.deepEqual(release.requested, ["SHA256SUMS", `reverprox-${HOST}`]);
    assert.match(out, new RegExp(`installed ${dir}/reverprox from ${release.url}/reverprox-${HOST}`));
    assert.match(out, /\(release: latest\); it says: reverprox 9\.9\.9-test/);
    assert.match(out, new RegExp(`${dir} is not on your PATH; .*export PATH="${dir}:\\$PATH"`));
  });

  Deno.test(`${shell}: --server and REVERPROX_INSTALL_SERVER=1 add the relay; the default dir is ~/.local/bin`, async () => {
    await using processes = new Processes();
    await using release = await FakeRelease.start();
    const home = await processes.tempDir();
    const bin = join(home, ".local", "bin");
    const env = { REVERPROX_RELEASE_URL: release.url, HOME: home, PATH: `${bin}:${Deno.env.get("PATH")}` };
    for (const [extraEnv, args] of [[{}, ["--server"]], [{ REVERPROX_INSTALL_SERVER: "1" }, []]] as const) {
      await Deno.remove(bin, { recursive: true }).catch(() => {}); // Absent before the first run.
      const { code, out } = await install(processes, shell, { ...env, ...extraEnv }, [...args]);
      assert.equal(code, 0, out);
      assert.deepEqual(await listDir(bin), ["reverprox", "reverprox-server"]);
      assert.equal(await runs(join(bin, "reverprox-server")), "reverprox-server 9.9.9-test");
      assert.doesNotMatch(out, /not on your PATH/);
    }
  });

  Deno.test(`${shell}: a tampered binary is refused loudly and nothing installed is touched`, async () => {
    await using processes = new Processes();
    await using release = await FakeRelease.start();
    const dir = await processes.tempDir();
    await Deno.writeTextFile(join(dir, "reverprox"), "the old client");
    // The client is intact; the relay was changed after SHA256SUMS was made.
    release.files.set(`reverprox-server-${HOST}`, fakeBinary("evil"));
    const { code, out } = await install(processes, shell, {
      REVERPROX_RELEASE_URL: release.url,
      REVERPROX_INSTALL_DIR: dir,
    }, ["--server"]);
    assert.equal(code, 1, out);
    assert.match(
      out,
      new RegExp(`error: checksum mismatch for reverprox-server-${HOST}: SHA256SUMS says \\w{64}`),
    );
    assert.match(out, /tampered with; nothing was installed/);
    assert.deepEqual(await listDir(dir), ["reverprox"]);
    assert.equal(await Deno.readTextFile(join(dir, "reverprox")), "the old client");
  });

  Deno.test(`${shell}: a file SHA256SUMS does not list is refused`, async () => {
    await using processes = new Processes();
    await using release = await FakeRelease.start();
    const unlisted = new TextDecoder().decode(release.files.get("SHA256SUMS")!)
      .split("\n").filter((line) => !line.endsWith(`  reverprox-${HOST}`)).join("\n");
    release.files.set("SHA256SUMS", new TextEncoder().encode(unlisted));
    const dir = join(await processes.tempDir(), "bin");
    const { code, out } = await install(processes, shell, {
      REVERPROX_RELEASE_URL: release.url,
      REVERPROX_INSTALL_DIR: dir,
    });
    assert.equal(code, 1, out);
    assert.match(out, new RegExp(`SHA256SUMS of this release has no entry for reverprox-${HOST}: refusing`));
    assert.deepEqual(await listDir(dir), []);
  });

  Deno.test(`${shell}: a release without this machine's build, or with no SHA256SUMS, is a clear error`, async () => {
    await using processes = new Processes();
    await using release = await FakeRelease.start(TARGETS.filter((target) => target !== HOST));
    const dir = join(await processes.tempDir(), "bin");
    const env = { REVERPROX_RELEASE_URL: release.url, REVERPROX_INSTALL_DIR: dir };
    const missing = await install(processes, shell, env);
    assert.equal(missing.code, 1, missing.out);
    assert.match(missing.out, /404/); // curl's own line says why.
    assert.match(
      missing.out,
      new RegExp(
        `error: could not download reverprox-${HOST} from ${release.url}/: the release has no build`,
      ),
    );
    release.files.delete("SHA256SUMS");
    const noSums = await install(processes, shell, { ...env, REVERPROX_VERSION: "v9.9.9" });
    assert.equal(noSums.code, 1, noSums.out);
    assert.match(
      noSums.out,
      new RegExp(`could not download ${release.url}/SHA256SUMS .*no such release \\(v9\\.9\\.9\\)`),
    );
    assert.deepEqual(await listDir(dir), []);
  });

  Deno.test(`${shell}: an install dir that cannot be made is a clear error`, async () => {
    await using processes = new Processes();
    await using release = await FakeRelease.start();
    const file = join(await processes.tempDir(), "a-file");
    await Deno.writeTextFile(file, "");
    const { code, out } = await install(processes, shell, {
      REVERPROX_RELEASE_URL: release.url,
      REVERPROX_INSTALL_DIR: join(file, "bin"),
    });
    assert.equal(code, 1, out);
    assert.match(
      out,
      new RegExp(`error: cannot write to ${file}/bin: set REVERPROX_INSTALL_DIR to a directory you own`),
    );
  });

  Deno.test(`${shell}: uname's OS and CPU pick the build; Windows and unknown platforms are told why not`, async () => {
    await using processes = new Processes();
    await using release = await FakeRelease.start();
    const path = Deno.env.get("PATH");
    const picks = [
      ["Linux", "x86_64", "x86_64-unknown-linux-gnu"],
      ["Linux", "aarch64", "aarch64-unknown-linux-gnu"],
      ["Darwin", "x86_64", "x86_64-apple-darwin"],
      ["Darwin", "arm64", "aarch64-apple-darwin"],
    ];
    for (const [os, cpu, target] of picks) {
      const dir = await processes.tempDir();
      const env = { REVERPROX_RELEASE_URL: release.url, REVERPROX_INSTALL_DIR: dir };
      const { code, out } = await install(processes, shell, {
        ...env,
        PATH: `${await fakeUname(processes, os, cpu)}:${path}`,
      });
      assert.equal(code, 0, out);
      assert.equal(release.requested.at(-1), `reverprox-${target}`, `${os} ${cpu}`);
      assert.deepEqual(await listDir(dir), ["reverprox"]);
    }
    const refusals = [
      [
        "MINGW64_NT-10.0-19045",
        "x86_64",
        /does not install on Windows\. Download reverprox-x86_64-pc-windows-msvc\.exe/,
      ],
      ["FreeBSD", "amd64", /no reverprox build for the OS 'FreeBSD'/],
      ["Linux", "riscv64", /no reverprox build for the CPU 'riscv64' on Linux/],
    ] as const;
    for (const [os, cpu, message] of refusals) {
      const dir = join(await processes.tempDir(), "bin");
      const env = { REVERPROX_RELEASE_URL: release.url, REVERPROX_INSTALL_DIR: dir };
      const { code, out } = await install(processes, shell, {
        ...env,
        PATH: `${await fakeUname(processes, os, cpu)}:${path}`,
      });
      assert.equal(code, 1, out);
      assert.match(out, message);
      assert.deepEqual(await listDir(dir), []);
    }
  });

  Deno.test(`${shell}: works with wget and shasum alone; says which tool is missing otherwise`, async () => {
    await using processes = new Processes();
    await using release = await FakeRelease.start();
    const run = async (tools: string[]) => {
      const dir = join(await processes.tempDir(), "bin");
      const env = { REVERPROX_RELEASE_URL: release.url, REVERPROX_INSTALL_DIR: dir };
      const result = await install(processes, shell, { ...env, PATH: await bareTools(processes, tools) });
      return { ...result, installed: await listDir(dir) };
    };
    const fallbacks = await run(["wget", "shasum"]);
    assert.equal(fallbacks.code, 0, fallbacks.out);
    assert.deepEqual(fallbacks.installed, ["reverprox"]);
    const noDownloader = await run(["sha256sum"]);
    assert.equal(noDownloader.code, 1, noDownloader.out);
    assert.match(noDownloader.out, /neither curl nor wget is installed/);
    const noHasher = await run(["curl"]);
    assert.equal(noHasher.code, 1, noHasher.out);
    assert.match(noHasher.out, /neither sha256sum nor shasum is installed: cannot check the download/);
    assert.deepEqual(noHasher.installed, []);
  });
}

const shellcheck = await run("sh", ["-c", "command -v shellcheck"]).then(() => true, () => false);

Deno.test("install.sh parses under sh -n and bash -n", async () => {
  for (const shell of SHELLS) await run(shell, ["-n", join(ROOT, "install.sh")]);
});

Deno.test("install.sh is shellcheck-clean for sh, dash and bash", {
  ignore: !shellcheck, // .ci/run installs it: apt-get install shellcheck
}, async () => {
  for (const dialect of ["sh", "dash", "bash"]) {
    await run("shellcheck", ["--shell", dialect, join(ROOT, "install.sh")]);
  }
});
