// Application Auto Scaling for ECS services: the scalable targets
// (DescribeScalableTargets) and scaling policies (DescribeScalingPolicies) with their
// CloudWatch alarms, and a policy's details with its recent scaling activities
// (DescribeScalingActivities).

import { listAll } from "../api.js";
import { h, table, link, seg, status, crumbs, pageHead, panel } from "../ui.js";
import { refreshButton } from "../app.js";

const time = (t) => (t ? new Date(t * 1000).toLocaleString() : "-");
const NS = { ServiceNamespace: "ecs" };

function describePolicy(p) {
  const t = p.TargetTrackingScalingPolicyConfiguration;
  if (!t) return p.PolicyType;
  const metric = t.PredefinedMetricSpecification?.PredefinedMetricType || t.CustomizedMetricSpecification?.MetricName || "custom metric";
  return `${metric} at ${t.TargetValue} (scale-out cooldown ${t.ScaleOutCooldown ?? 300} s, scale-in ${t.DisableScaleIn ? "off" : `cooldown ${t.ScaleInCooldown ?? 300} s`})`;
}

export async function render({ resource, name }) {
  if (resource && name) return policy(resource, name);
  const [targets, policies] = await Promise.all([
    listAll("autoscaling", "DescribeScalableTargets", NS, "ScalableTargets"),
    listAll("autoscaling", "DescribeScalingPolicies", NS, "ScalingPolicies"),
  ]);
  return h(
    "section",
    {},
    pageHead("Scaling policies", policies.length, refreshButton()),
    table(
      "Scaling policies",
      ["Policy name", "Resource", "Type", "Target tracking", "Alarms", "Created at"],
      policies.map((p) => [
        link(`/scaling-policies/${seg(p.ResourceId)}/${seg(p.PolicyName)}`, p.PolicyName),
        p.ResourceId,
        p.PolicyType,
        describePolicy(p),
        (p.Alarms || []).map((a) => link(`/alarms/${seg(a.AlarmName)}`, a.AlarmName)).flatMap((l, i) => (i ? [", ", l] : [l])),
        time(p.CreationTime),
      ]),
      "No scaling policies.",
    ),
    table(
      "Scalable targets",
      ["Resource", "Dimension", "Minimum tasks", "Maximum tasks", "Suspended"],
      targets.map((t) => [
        t.ResourceId,
        t.ScalableDimension,
        String(t.MinCapacity),
        String(t.MaxCapacity),
        Object.entries(t.SuspendedState || {}).filter(([, v]) => v).map(([k]) => k).join(", ") || "-",
      ]),
      "No scalable targets.",
    ),
  );
}

async function policy(resource, name) {
  const ps = await listAll("autoscaling", "DescribeScalingPolicies", { ...NS, ResourceId: resource, PolicyNames: [name] }, "ScalingPolicies");
  const p = ps[0];
  if (!p) throw { type: "ObjectNotFoundException", message: `No scaling policy ${name} for ${resource}.` };
  const acts = await listAll("autoscaling", "DescribeScalingActivities", { ...NS, ResourceId: resource, MaxResults: 50 }, "ScalingActivities");
  return h(
    "section",
    {},
    crumbs([["/scaling-policies", "Scaling policies"]], name),
    pageHead(name, undefined, refreshButton()),
    panel("Policy details", [
      ["ARN", p.PolicyARN],
      ["Resource", p.ResourceId],
      ["Scalable dimension", p.ScalableDimension],
      ["Policy type", p.PolicyType],
      ["Target tracking", describePolicy(p)],
      ["Alarms", (p.Alarms || []).map((a) => a.AlarmName).join(", ")],
      ["Created at", time(p.CreationTime)],
    ]),
    table(
      "Scaling activities",
      ["Start time", "Status", "Description", "Cause"],
      acts.map((a) => [time(a.StartTime), status(a.StatusCode), a.Description, a.Cause]),
      "No scaling activities.",
    ),
  );
}
