import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";

/**
 * A self-signed certificate for `host` (an IP address or a DNS name), made with openssl in
 * `dir` and valid for a day; undefined where openssl is missing.
 */
export function selfSignedCertificate(dir: string, host = "127.0.0.1"): { key: Buffer; cert: Buffer } | undefined {
  try {
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        join(dir, "key.pem"),
        "-out",
        join(dir, "cert.pem"),
        "-days",
        "1",
        "-subj",
        `/CN=${host}`,
        "-addext",
        `subjectAltName=${isIP(host) ? "IP" : "DNS"}:${host}`,
      ],
      { stdio: "ignore" },
    );
    return { key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) };
  } catch {
    return undefined;
  }
}
