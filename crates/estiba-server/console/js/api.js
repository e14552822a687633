// The console's one way to the server: AWS JSON calls (`POST /` with `X-Amz-Target`) and
// Query calls (EC2's, ELBv2's, STS's: a form body, XML answers) to the same public APIs boto3 and
// the AWS CLI use. Nothing else in the console talks to the server, so request signing is done
// here and nowhere else.
//
// Regions: the server takes a request's region from its SigV4 credential scope, as AWS's
// endpoints do. When the server verifies requests (`--credentials`; the page's `data-auth` is
// `sigv4`), every call is signed with Signature Version 4 by the access key the user signed in
// with (sigv4.js). Otherwise every call carries an `Authorization` header naming the scope
// (the page's account as the key, today's date, the region chosen in the header's switcher,
// the service's signing name) and no signature, which such a server does not check.

import { credentials, required, signedHeaders } from "./sigv4.js";

const SERVICES = {
  ecs: { target: "AmazonEC2ContainerServiceV20141113", json: "1.1", signing: "ecs" },
  ecr: { target: "AmazonEC2ContainerRegistry_V20150921", json: "1.1", signing: "ecr" },
  logs: { target: "Logs_20140328", json: "1.1", signing: "logs" },
  servicediscovery: { target: "Route53AutoNaming_v20170314", json: "1.1", signing: "servicediscovery" },
  autoscaling: { target: "AnyScaleFrontendService", json: "1.1", signing: "application-autoscaling" },
  cloudwatch: { target: "GraniteServiceVersion20100801", json: "1.0", signing: "monitoring" },
};

const REGION_KEY = "estiba.region";

/** The region requests are scoped to: the switcher's choice, else the server's default. */
export function region() {
  return localStorage.getItem(REGION_KEY) || document.body.dataset.region;
}

/** Chooses the region later requests are scoped to (kept across reloads). */
export function setRegion(r) {
  if (!r || r === document.body.dataset.region) localStorage.removeItem(REGION_KEY);
  else localStorage.setItem(REGION_KEY, r);
}

/** The credential scope naming this console's account, region and `signing` service. */
function scope(signing) {
  const date = new Date().toISOString().slice(0, 10).replaceAll("-", "");
  return `AWS4-HMAC-SHA256 Credential=${document.body.dataset.account}/${date}/${region()}/${signing}/aws4_request`;
}

/** The headers of a call to `signing` with `body`: signed by `creds` (the signed-in key by
 * default) when the server verifies requests, else naming the scope only. */
function authorize(signing, headers, body, creds = credentials()) {
  if (!required()) return { ...headers, Authorization: scope(signing) };
  if (!creds) throw new ApiError("SignInRequired", "Sign in with an access key to use the console.", 0);
  return signedHeaders({ host: location.host, headers, body, region: region(), service: signing, creds });
}

/** An error the API answered: AWS's exception type and message. */
export class ApiError extends Error {
  constructor(type, message, status) {
    super(message);
    this.name = "ApiError";
    this.type = type;
    this.status = status;
  }
}

/** Calls `operation` of `service` with `input`; resolves to the output, rejects with ApiError. */
export async function call(service, operation, input = {}) {
  const s = SERVICES[service];
  if (!s) throw new ApiError("ConsoleError", `The console does not know the ${service} API.`, 0);
  const payload = JSON.stringify(input);
  const headers = authorize(s.signing, { "Content-Type": `application/x-amz-json-${s.json}`, "X-Amz-Target": `${s.target}.${operation}` }, payload);
  let resp;
  try {
    resp = await fetch("/", { method: "POST", headers, body: payload });
  } catch (e) {
    throw new ApiError("NetworkError", `Could not reach the server: ${e.message}`, 0);
  }
  const text = await resp.text();
  let body = {};
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      throw new ApiError("InvalidResponse", `The server answered ${resp.status} with a body that is not JSON.`, resp.status);
    }
  }
  if (!resp.ok) {
    // `__type` may be `Name` or `namespace#Name`; the header carries the same.
    const raw = body.__type || resp.headers.get("x-amzn-ErrorType") || `HTTP ${resp.status}`;
    const type = raw.split("#").pop().split(":")[0];
    throw new ApiError(type, body.message || body.Message || "", resp.status);
  }
  return body;
}

/** ECS's operations. */
export const ecs = (operation, input) => call("ecs", operation, input);

/** Every page of a List* operation: the `key` arrays concatenated. Follows `nextToken` or,
 * in the APIs that capitalize it (Cloud Map, Application Auto Scaling, CloudWatch),
 * `NextToken`. */
export async function listAll(service, operation, input, key) {
  const out = [];
  let more = {};
  do {
    const page = await call(service, operation, { ...input, ...more });
    out.push(...(page[key] || []));
    more = page.nextToken ? { nextToken: page.nextToken } : page.NextToken ? { NextToken: page.NextToken } : null;
  } while (more);
  return out;
}

/** A Describe* operation over `ids` in batches of `size` (its API's limit); `key` is the list
 * answered, `failures` are collected. */
export async function describeAll(service, operation, input, idsKey, ids, key, size) {
  const out = [];
  const failures = [];
  for (let i = 0; i < ids.length; i += size) {
    const page = await call(service, operation, { ...input, [idsKey]: ids.slice(i, i + size) });
    out.push(...(page[key] || []));
    failures.push(...(page.failures || []));
  }
  return { items: out, failures };
}

/** ECR's operations. */
export const ecr = (operation, input) => call("ecr", operation, input);

/** Posts a Query call (`Action=...&Version=...` as a form body) signed for `signing` (by
 * `creds` when given, else the signed-in key); resolves to the answer's XML document, rejects
 * with ApiError (the `<Error>`'s code and message, in EC2's `<Response><Errors>` or Query's
 * `<ErrorResponse>`). */
async function query(signing, version, operation, params, creds) {
  const body = new URLSearchParams({ Action: operation, Version: version, ...params }).toString();
  const headers = authorize(signing, { "Content-Type": "application/x-www-form-urlencoded; charset=utf-8" }, body, creds);
  let resp;
  try {
    resp = await fetch("/", { method: "POST", headers, body });
  } catch (e) {
    throw new ApiError("NetworkError", `Could not reach the server: ${e.message}`, 0);
  }
  const doc = new DOMParser().parseFromString(await resp.text(), "application/xml");
  if (!resp.ok) {
    const code = doc.querySelector("Error Code")?.textContent || `HTTP ${resp.status}`;
    throw new ApiError(code, doc.querySelector("Error Message")?.textContent || "", resp.status);
  }
  return doc;
}

/** An EC2 call. `params` are already in EC2's Query form (`SubnetId.1`, `Filter.1.Name`, ...).
 * Resolves to the answer's XML document. */
export const ec2 = (operation, params = {}) => query("ec2", "2016-11-15", operation, params);

/** The items of an EC2 Describe* answer's `set` (`subnetSet`, ...), each an object of its
 * scalar members (`{subnetId: "subnet-1", vpcId: "vpc-1", ...}`). */
export async function ec2Items(operation, params, set) {
  const doc = await ec2(operation, params);
  const list = doc.getElementsByTagName(set)[0];
  if (!list) return [];
  return [...list.children]
    .filter((item) => item.tagName === "item")
    .map((item) => Object.fromEntries([...item.children].filter((c) => c.children.length === 0).map((c) => [c.tagName, c.textContent])));
}

/** An input object in Query form: nested members joined with dots, lists as
 * `Name.member.N` (`{Subnets: ["a"]}` → `Subnets.member.1=a`). */
export function queryParams(input, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(input)) {
    if (v === undefined || v === null) continue;
    const key = prefix ? `${prefix}.${k}` : k;
    if (Array.isArray(v))
      v.forEach((item, i) => (typeof item === "object" ? queryParams(item, `${key}.member.${i + 1}`, out) : (out[`${key}.member.${i + 1}`] = String(item))));
    else if (typeof v === "object") queryParams(v, key, out);
    else out[key] = String(v);
  }
  return out;
}

/** A Query answer's element as JSON: `<member>` children become arrays, leaves their text. */
function xmlValue(el) {
  const kids = [...el.children];
  if (!kids.length) return el.textContent;
  if (kids.every((c) => c.tagName === "member")) return kids.map(xmlValue);
  return Object.fromEntries(kids.map((c) => [c.tagName, xmlValue(c)]));
}

/** Elastic Load Balancing (v2): an input object in, the `<Operation>Result` as JSON out
 * (`{LoadBalancers: [{LoadBalancerArn: ...}]}`); numbers and booleans stay strings, as XML
 * carries them. */
export async function elbv2(operation, input = {}) {
  const doc = await query("elasticloadbalancing", "2015-12-01", operation, queryParams(input));
  const result = doc.getElementsByTagName(`${operation}Result`)[0];
  return result ? xmlValue(result) : {};
}

/** Every page of an ELBv2 Describe* operation (`Marker` / `NextMarker`): the `key` lists. */
export async function elbv2All(operation, input, key) {
  const out = [];
  let Marker;
  do {
    const page = await elbv2(operation, Marker ? { ...input, Marker } : input);
    out.push(...(Array.isArray(page[key]) ? page[key] : []));
    Marker = page.NextMarker;
  } while (Marker);
  return out;
}

/** CloudWatch Logs' operations. */
export const logs = (operation, input) => call("logs", operation, input);

/** Cloud Map's operations. */
export const servicediscovery = (operation, input) => call("servicediscovery", operation, input);

/** Application Auto Scaling's operations. */
export const autoscaling = (operation, input) => call("autoscaling", operation, input);

/** CloudWatch's operations (AWS JSON 1.0). */
export const cloudwatch = (operation, input) => call("cloudwatch", operation, input);

/** STS GetCallerIdentity signed by `creds`: resolves to {account, arn} (how sign-in checks a key). */
export async function callerIdentity(creds) {
  const doc = await query("sts", "2011-06-15", "GetCallerIdentity", {}, creds);
  const text = (tag) => doc.getElementsByTagName(tag)[0]?.textContent || "";
  return { account: text("Account"), arn: text("Arn") };
}
