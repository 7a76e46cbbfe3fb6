/**
 * Certificates for tests and benchmarks, made with openssl (on every machine the suite runs on).
 * @module
 */
import { join } from "node:path";

/** A self-signed certificate and key (P-256) for `names`, written to `dir/<file>.pem` and `.key`. */
export async function selfSigned(dir: string, file: string, names: string[]) {
  const cert = join(dir, `${file}.pem`), key = join(dir, `${file}.key`);
  const sans = names.map((name) => /^[\d.]+$/.test(name) ? `IP:${name}` : `DNS:${name}`).join(",");
  await openssl([
    ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
    ...["-keyout", key, "-out", cert, "-days", "2", "-subj", `/CN=${names[0]}`],
    ...["-addext", `subjectAltName=${sans}`],
  ]);
  return { cert, key };
}

/**
 * A CA and a certificate it signed for `names` (as a website's would be: a self-signed certificate
 * used as a server's is refused by rustls), written to `dir`: `ca` is the CA's PEM.
 */
export async function caSigned(dir: string, names: string[]) {
  const ca = join(dir, "test-ca.pem"), caKey = join(dir, "test-ca.key");
  const cert = join(dir, "site.pem"), key = join(dir, "site.key"), csr = join(dir, "site.csr");
  const ext = join(dir, "site.ext");
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await openssl([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    caKey,
    "-out",
    ca,
    "-days",
    "2",
    "-subj",
    "/CN=reverprox test CA",
  ]);
  await openssl(["req", ...ec, "-keyout", key, "-out", csr, "-subj", `/CN=${names[0]}`]);
  await Deno.writeTextFile(ext, `subjectAltName=${names.map((name) => `DNS:${name}`).join(",")}\n`);
  await openssl([
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    ca,
    "-CAkey",
    caKey,
    "-CAcreateserial",
    "-out",
    cert,
    "-days",
    "2",
    "-extfile",
    ext,
  ]);
  return { ca, cert, key };
}

async function openssl(args: string[]) {
  const { code, stderr } = await new Deno.Command("openssl", { args, stdout: "null", stderr: "piped" })
    .output();
  if (code !== 0) throw new Error(`openssl: ${new TextDecoder().decode(stderr)}`);
}
