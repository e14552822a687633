// Elastic Load Balancing: the load balancers (DescribeLoadBalancers) and one load balancer's
// listeners (DescribeListeners), their rules (DescribeRules), its target groups
// (DescribeTargetGroups) and their targets' health (DescribeTargetHealth).

import { elbv2, elbv2All } from "../api.js";
import { h, table, link, seg, status, crumbs, pageHead, panel } from "../ui.js";
import { refreshButton } from "../app.js";
import { targetHealthRows, targetHealthTable, targetGroupName } from "../watch.js";

const list = (v) => (Array.isArray(v) ? v : []);
const time = (iso) => (iso ? new Date(iso).toLocaleString() : "-");

export async function render({ name }) {
  if (name) return loadBalancer(name);
  const lbs = await elbv2All("DescribeLoadBalancers", {}, "LoadBalancers");
  lbs.sort((a, b) => a.LoadBalancerName.localeCompare(b.LoadBalancerName));
  return h(
    "section",
    {},
    pageHead("Load balancers", lbs.length, refreshButton()),
    table(
      "Load balancers",
      ["Name", "State", "Type", "Scheme", "DNS name", "VPC ID", "Availability Zones", "Created at"],
      lbs.map((l) => [
        link(`/load-balancers/${seg(l.LoadBalancerName)}`, l.LoadBalancerName),
        status(l.State?.Code),
        l.Type,
        l.Scheme,
        h("span", { class: "mono" }, l.DNSName),
        l.VpcId,
        list(l.AvailabilityZones).map((z) => z.ZoneName).join(", "),
        time(l.CreatedTime),
      ]),
      "No load balancers.",
    ),
  );
}

function actions(as) {
  return list(as)
    .map((a) => (a.Type === "forward" ? `forward to ${targetGroupName(a.TargetGroupArn || list(a.ForwardConfig?.TargetGroups)[0]?.TargetGroupArn)}` : a.Type))
    .join(", ");
}

function conditions(cs) {
  return list(cs)
    .map((c) => `${c.Field} is ${list(c.Values).concat(list(c.PathPatternConfig?.Values), list(c.HostHeaderConfig?.Values)).join(" or ")}`)
    .join(" and ");
}

async function loadBalancer(name) {
  const l = (await elbv2("DescribeLoadBalancers", { Names: [name] })).LoadBalancers[0];
  const [listeners, tgs] = await Promise.all([
    elbv2All("DescribeListeners", { LoadBalancerArn: l.LoadBalancerArn }, "Listeners"),
    elbv2All("DescribeTargetGroups", { LoadBalancerArn: l.LoadBalancerArn }, "TargetGroups"),
  ]);
  const rules = [];
  for (const ls of listeners) {
    const out = await elbv2("DescribeRules", { ListenerArn: ls.ListenerArn });
    for (const r of list(out.Rules)) rules.push([`${ls.Protocol}:${ls.Port}`, r.Priority, r.IsDefault === "true" ? "(default)" : conditions(r.Conditions), actions(r.Actions)]);
  }
  const health = await targetHealthRows(tgs.map((t) => t.TargetGroupArn));
  return h(
    "section",
    {},
    crumbs([["/load-balancers", "Load balancers"]], name),
    pageHead(name, undefined, refreshButton()),
    panel("Details", [
      ["ARN", l.LoadBalancerArn],
      ["DNS name", l.DNSName],
      ["State", status(l.State?.Code)],
      ["Type", l.Type],
      ["Scheme", l.Scheme],
      ["VPC", l.VpcId],
      ["Security groups", list(l.SecurityGroups).join(", ")],
      ["Subnets", list(l.AvailabilityZones).map((z) => `${z.SubnetId} (${z.ZoneName})`).join(", ")],
      ["Created at", time(l.CreatedTime)],
    ]),
    table(
      "Listeners",
      ["Protocol:Port", "Default action", "ARN"],
      listeners.map((ls) => [`${ls.Protocol}:${ls.Port}`, actions(ls.DefaultActions), h("span", { class: "mono" }, ls.ListenerArn)]),
      "No listeners.",
    ),
    table("Rules", ["Listener", "Priority", "Conditions", "Actions"], rules, "No rules."),
    table(
      "Target groups",
      ["Name", "Protocol", "Port", "Target type", "Health check", "VPC ID"],
      tgs.map((t) => [t.TargetGroupName, t.Protocol, t.Port, t.TargetType, `${t.HealthCheckProtocol || ""} ${t.HealthCheckPath || ""}`.trim(), t.VpcId]),
      "No target groups.",
    ),
    targetHealthTable(health),
  );
}
