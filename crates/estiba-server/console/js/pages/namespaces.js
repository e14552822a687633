// AWS Cloud Map: the namespaces (ListNamespaces) and a namespace's details (GetNamespace), its
// services (ListServices filtered by namespace) and their registered instances
// (ListInstances) with their attributes.

import { servicediscovery, listAll } from "../api.js";
import { h, table, link, seg, crumbs, pageHead, panel } from "../ui.js";
import { refreshButton } from "../app.js";

const time = (t) => (t ? new Date(t * 1000).toLocaleString() : "-");

export async function render({ id }) {
  if (id) return namespace(id);
  const nss = await listAll("servicediscovery", "ListNamespaces", {}, "Namespaces");
  nss.sort((a, b) => a.Name.localeCompare(b.Name));
  return h(
    "section",
    {},
    pageHead("Namespaces", nss.length, refreshButton()),
    table(
      "Namespaces",
      ["Namespace name", "Namespace ID", "Instance discovery", "Services", "Created at"],
      nss.map((n) => [
        link(`/namespaces/${seg(n.Id)}`, n.Name),
        h("span", { class: "mono" }, n.Id),
        n.Type === "HTTP" ? "API calls" : n.Type === "DNS_PRIVATE" ? "API calls and DNS queries in VPCs" : "API calls and public DNS queries",
        String(n.ServiceCount ?? 0),
        time(n.CreateDate),
      ]),
      "No namespaces.",
    ),
  );
}

async function namespace(id) {
  const n = (await servicediscovery("GetNamespace", { Id: id })).Namespace;
  const services = await listAll("servicediscovery", "ListServices", { Filters: [{ Name: "NAMESPACE_ID", Values: [id], Condition: "EQ" }] }, "Services");
  services.sort((a, b) => a.Name.localeCompare(b.Name));
  const instances = [];
  for (const s of services) {
    const out = await listAll("servicediscovery", "ListInstances", { ServiceId: s.Id }, "Instances");
    for (const i of out) instances.push([s.Name, h("span", { class: "mono" }, i.Id), Object.entries(i.Attributes || {}).map(([k, v]) => `${k}=${v}`).join(", ")]);
  }
  return h(
    "section",
    {},
    crumbs([["/namespaces", "Namespaces"]], n.Name),
    pageHead(n.Name, undefined, refreshButton()),
    panel("Namespace details", [
      ["Namespace ID", n.Id],
      ["ARN", n.Arn],
      ["Type", n.Type],
      ["Hosted zone", n.Properties?.DnsProperties?.HostedZoneId],
      ["HTTP name", n.Properties?.HttpProperties?.HttpName],
      ["Description", n.Description],
      ["Created at", time(n.CreateDate)],
    ]),
    table(
      "Services",
      ["Service name", "Service ID", "DNS records", "Instances", "Health check"],
      services.map((s) => [
        s.Name,
        h("span", { class: "mono" }, s.Id),
        (s.DnsConfig?.DnsRecords || []).map((r) => `${r.Type} (TTL ${r.TTL})`).join(", ") || "-",
        String(s.InstanceCount ?? 0),
        s.HealthCheckCustomConfig ? "Custom" : s.HealthCheckConfig ? s.HealthCheckConfig.Type : "-",
      ]),
      "No services.",
    ),
    table("Service instances", ["Service", "Instance ID", "Attributes"], instances, "No instances registered."),
  );
}
