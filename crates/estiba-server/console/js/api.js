// The console's one way to the server: AWS JSON calls (`POST /` with `X-Amz-Target`) and EC2's
// Query calls (a form body, XML answers) to the same public APIs boto3 and the AWS CLI use. Nothing else in the console talks to the server,
// so request signing (issue 21) is added here and nowhere else.

const SERVICES = {
  ecs: { target: "AmazonEC2ContainerServiceV20141113", json: "1.1" },
  ecr: { target: "AmazonEC2ContainerRegistry_V20150921", json: "1.1" },
};

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
  let resp;
  try {
    resp = await fetch("/", {
      method: "POST",
      headers: {
        "Content-Type": `application/x-amz-json-${s.json}`,
        "X-Amz-Target": `${s.target}.${operation}`,
      },
      body: JSON.stringify(input),
    });
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

/** Every page of a List* operation: the `key` arrays concatenated. */
export async function listAll(service, operation, input, key) {
  const out = [];
  let nextToken;
  do {
    const page = await call(service, operation, nextToken ? { ...input, nextToken } : input);
    out.push(...(page[key] || []));
    nextToken = page.nextToken;
  } while (nextToken);
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

const EC2_VERSION = "2016-11-15";

/** An EC2 Query call (`Action=...` as a form body). `params` are already in Query form
 * (`SubnetId.1`, `Filter.1.Name`, ...). Resolves to the answer's XML document, rejects with
 * ApiError (EC2's `<Response><Errors>` code and message). */
export async function ec2(operation, params = {}) {
  const body = new URLSearchParams({ Action: operation, Version: EC2_VERSION, ...params });
  let resp;
  try {
    resp = await fetch("/", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded; charset=utf-8" },
      body,
    });
  } catch (e) {
    throw new ApiError("NetworkError", `Could not reach the server: ${e.message}`, 0);
  }
  const doc = new DOMParser().parseFromString(await resp.text(), "application/xml");
  if (!resp.ok) {
    const code = doc.querySelector("Errors Error Code")?.textContent || `HTTP ${resp.status}`;
    throw new ApiError(code, doc.querySelector("Errors Error Message")?.textContent || "", resp.status);
  }
  return doc;
}

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
