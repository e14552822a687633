// Signature Version 4 for the console's calls, and the access key the console signs with.
//
// SHA-256 and HMAC are written here rather than taken from `crypto.subtle`: the browser offers
// `crypto.subtle` only in secure contexts (https, or http on localhost), and a server listening on
// a LAN address over plain http is a normal way to run estiba; the console has no build step and
// no packages to take a library from. Both are checked against published test vectors
// (tests/e2e/test_console_auth.py runs them in the browser).
//
// The key is kept in `sessionStorage`: it lives as long as the tab, is never sent anywhere (only
// signatures are) and is forgotten on sign-out.

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const ror = (x, n) => (x >>> n) | (x << (32 - n));

const utf8 = (s) => new TextEncoder().encode(s);

/** SHA-256 (FIPS 180-4) of `data` (bytes or a string, taken as UTF-8): 32 bytes. */
export function sha256(data) {
  const bytes = typeof data === "string" ? utf8(data) : data;
  const n = bytes.length;
  const padded = new Uint8Array((((n + 8) >> 6) + 1) << 6);
  padded.set(bytes);
  padded[n] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(n / 0x20000000));
  view.setUint32(padded.length - 4, (n << 3) >>> 0);
  const hash = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + 4 * i);
    for (let i = 16; i < 64; i++) {
      const s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    let [a, b, c, d, e, f, g, h] = hash;
    for (let i = 0; i < 64; i++) {
      const t1 = (h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    [a, b, c, d, e, f, g, h].forEach((v, i) => (hash[i] += v));
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  hash.forEach((v, i) => outView.setUint32(4 * i, v));
  return out;
}

/** HMAC-SHA-256 (RFC 2104) of `data` under `key` (bytes or strings): 32 bytes. */
export function hmac(key, data) {
  let k = typeof key === "string" ? utf8(key) : key;
  if (k.length > 64) k = sha256(k);
  const block = new Uint8Array(64);
  block.set(k);
  const msg = typeof data === "string" ? utf8(data) : data;
  const inner = new Uint8Array(64 + msg.length);
  inner.set(block.map((b) => b ^ 0x36));
  inner.set(msg, 64);
  const outer = new Uint8Array(64 + 32);
  outer.set(block.map((b) => b ^ 0x5c));
  outer.set(sha256(inner), 64);
  return sha256(outer);
}

/** Lower-case hex of bytes. */
export const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

/** The headers that sign a `POST /` of `body` (a string) to `service` in `region` with `creds`
 * ({accessKeyId, secretAccessKey, sessionToken?}): `headers` (which must hold Content-Type and,
 * for JSON APIs, X-Amz-Target) plus X-Amz-Date, X-Amz-Security-Token and Authorization. The
 * browser sends Host itself, as `host` (the page's own origin), which is signed too. */
export function signedHeaders({ host, headers, body, region, service, creds, now = new Date() }) {
  const amzDate = now.toISOString().replace(/[-:]|\.\d{3}/g, "");
  const date = amzDate.slice(0, 8);
  const all = { ...headers, "X-Amz-Date": amzDate };
  if (creds.sessionToken) all["X-Amz-Security-Token"] = creds.sessionToken;
  const canon = Object.entries({ ...all, Host: host })
    .map(([k, v]) => [k.toLowerCase(), String(v).trim().replace(/\s+/g, " ")])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const names = canon.map(([k]) => k).join(";");
  // Each canonical header ends with a newline, so a blank line comes before the names.
  const request = ["POST", "/", "", canon.map(([k, v]) => `${k}:${v}\n`).join(""), names, hex(sha256(body))].join("\n");
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, hex(sha256(request))].join("\n");
  let key = hmac(`AWS4${creds.secretAccessKey}`, date);
  for (const part of [region, service, "aws4_request"]) key = hmac(key, part);
  all.Authorization = `AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/${scope}, SignedHeaders=${names}, Signature=${hex(hmac(key, toSign))}`;
  return all;
}

const KEY = "estiba.credentials";

/** Whether this server verifies requests (the page says so), so the console must sign in. */
export const required = () => document.body.dataset.auth === "sigv4";

/** The signed-in key ({accessKeyId, secretAccessKey, sessionToken, account, arn}) or null. */
export function credentials() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    return null;
  }
}

/** Keeps `creds` for this tab's later calls. */
export function signIn(creds) {
  sessionStorage.setItem(KEY, JSON.stringify(creds));
}

/** Forgets the key. */
export function signOut() {
  sessionStorage.removeItem(KEY);
}
