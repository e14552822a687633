// A service: its overview, deployments with their progress and rollout state, events, tasks and
// its load balancer's target health, kept live by asking DescribeServices / ListTasks /
// DescribeTasks (and DescribeTargetHealth) again every 750 ms while the page is open and
// visible (a task's state change shows within a second); its containers' logs (live
// tail) and its metrics graphs (js/watch.js). Update service and Delete service (DeleteService
// with force, as the console's "Force delete").

import { ecs, listAll, describeAll } from "../api.js";
import { h, table, link, seg, status, arnName, time, showError, showSuccess, confirmDialog, actionButton, poll, crumbs, panel } from "../ui.js";
import { go } from "../app.js";
import { logDestinations, logPanel, metricsPanel, serviceGraphs, lbDimension, targetHealthRows, targetHealthTable, targetGroupName } from "../watch.js";
import { elbv2 } from "../api.js";

/** How often an open service view asks again (milliseconds): a change shows within this plus
 * one poll's server time (a few ms with 1,000 tasks, `cargo xtask bench console`), under 1 s. */
export const POLL_MS = 750;

async function load(cluster, name) {
  const out = await ecs("DescribeServices", { cluster, services: [name], include: ["TAGS"] });
  const s = (out.services || [])[0];
  if (!s) {
    const f = (out.failures || [])[0];
    throw { type: "ServiceNotFoundException", message: `Service ${name} ${f ? `: ${f.reason}` : "was not found"}.` };
  }
  const arns = await listAll("ecs", "ListTasks", { cluster, serviceName: s.serviceName, maxResults: 100 }, "taskArns");
  const { items } = await describeAll("ecs", "DescribeTasks", { cluster }, "tasks", arns, "tasks", 100);
  items.sort((a, b) => (b.createdAt || 0) - (a.createdAt || 0));
  const tgs = (s.loadBalancers || []).map((l) => l.targetGroupArn).filter(Boolean);
  const targets = tgs.length ? await targetHealthRows(tgs) : null;
  return { s, tasks: items, targets };
}

function taskDefLink(arn) {
  if (!arn) return "-";
  const fr = arnName(arn);
  const [family, revision] = fr.split(":");
  return link(`/task-definitions/${seg(family)}/${seg(revision)}`, fr);
}

/** A deployment's progress: its running tasks out of its desired count. */
function progress(d) {
  const want = d.desiredCount ?? 0;
  const have = Math.min(d.runningCount ?? 0, want);
  const text = want ? `${have} of ${want} running` : "0 desired";
  return h("span", { class: "progress" }, h("progress", { max: String(Math.max(want, 1)), value: String(want ? have : 1), "aria-label": text }), ` ${text}`);
}

function live({ s, tasks, targets }) {
  const dc = s.deploymentConfiguration || {};
  const cb = dc.deploymentCircuitBreaker || {};
  const awsvpc = s.networkConfiguration?.awsvpcConfiguration;
  return h(
    "div",
    {},
    panel("Service overview", [
      ["ARN", s.serviceArn],
      ["Status", status(s.status)],
      ["Desired tasks", String(s.desiredCount ?? 0)],
      ["Running tasks", String(s.runningCount ?? 0)],
      ["Pending tasks", String(s.pendingCount ?? 0)],
      ["Task definition", taskDefLink(s.taskDefinition)],
      ["Compute", s.launchType || (s.capacityProviderStrategy || []).map((p) => `${p.capacityProvider} (base ${p.base ?? 0}, weight ${p.weight ?? 0})`).join(", ")],
      ["Minimum healthy percent", String(dc.minimumHealthyPercent ?? "-")],
      ["Maximum percent", String(dc.maximumPercent ?? "-")],
      ["Deployment circuit breaker", cb.enable ? `On${cb.rollback ? ", rollback on failures" : ""}` : "Off"],
      ["Subnets", (awsvpc?.subnets || []).join(", ")],
      ["Security groups", (awsvpc?.securityGroups || []).join(", ")],
      ["Public IP", awsvpc?.assignPublicIp],
      ["Load balancers", (s.loadBalancers || []).map((l) => `${l.targetGroupArn ? targetGroupName(l.targetGroupArn) : l.loadBalancerName} → ${l.containerName}:${l.containerPort}`).join(", ")],
      ["Service discovery", (s.serviceRegistries || []).map((r) => r.registryArn).join(", ")],
      ["Created at", time(s.createdAt)],
      ["Tags", (s.tags || []).map((t) => `${t.key}=${t.value}`).join(", ")],
    ]),
    table(
      "Deployments",
      ["Deployment", "Status", "Rollout state", "Task definition", "Desired", "Pending", "Running", "Failed", "Progress", "Updated at"],
      (s.deployments || []).map((d) => [
        h("span", { class: "mono" }, d.id),
        status(d.status),
        h("span", { title: d.rolloutStateReason || "" }, d.rolloutState || "-"),
        taskDefLink(d.taskDefinition),
        String(d.desiredCount ?? 0),
        String(d.pendingCount ?? 0),
        String(d.runningCount ?? 0),
        String(d.failedTasks ?? 0),
        progress(d),
        time(d.updatedAt),
      ]),
      "No deployments.",
    ),
    table(
      "Tasks",
      ["Task", "Last status", "Desired status", "Task definition", "Health status", "Started at", "Stopped reason"],
      tasks.map((t) => [
        h("a", { class: "mono", title: t.taskArn, href: `#/clusters/${seg(s.clusterArn ? arnName(s.clusterArn) : "")}/tasks/${seg(arnName(t.taskArn))}` }, arnName(t.taskArn)),
        status(t.lastStatus),
        t.desiredStatus,
        taskDefLink(t.taskDefinitionArn),
        t.healthStatus || "-",
        time(t.startedAt),
        t.stoppedReason || "-",
      ]),
      "No tasks.",
    ),
    targets ? targetHealthTable(targets) : null,
    table(
      "Events",
      ["Event time", "Message"],
      (s.events || []).slice(0, 50).map((e) => [time(e.createdAt), e.message]),
      "No events.",
    ),
  );
}

export async function render({ cluster, service }) {
  const data = await load(cluster, service);
  const s = data.s;
  const base = `/clusters/${seg(cluster)}`;
  const body = h("div", { id: "service-live" }, live(data));
  // Logs of the current task definition's awslogs containers (every task's streams under the
  // prefix), and metrics of the service (with its ALB's requests when it has one).
  let taskDef = null;
  try {
    taskDef = (await ecs("DescribeTaskDefinition", { taskDefinition: s.taskDefinition })).taskDefinition;
  } catch {
    // A deleted revision: no log configuration to follow.
  }
  const logs = logPanel(logDestinations(taskDef).map((d) => ({ group: d.group, streamPrefix: d.prefix ? `${d.prefix}/${d.container}/` : undefined })));
  let lbArn;
  const tg = (s.loadBalancers || [])[0]?.targetGroupArn;
  if (tg) {
    try {
      const out = await elbv2("DescribeTargetGroups", { TargetGroupArns: [tg] });
      lbArn = (out.TargetGroups?.[0]?.LoadBalancerArns || [])[0];
    } catch {
      // The target group is gone: no request graph.
    }
  }
  const metrics = metricsPanel(serviceGraphs(arnName(s.clusterArn) || cluster, s.serviceName, lbDimension(lbArn)));
  const updated = h("p", { class: "hint", role: "status", "aria-live": "off", id: "service-updated" }, `Updated ${new Date().toLocaleTimeString()}`);

  const del = actionButton(
    "Delete service",
    async () => {
      const ok = await confirmDialog({
        title: `Delete ${s.serviceName}?`,
        text: "The service is deleted even if it has tasks (force delete): its tasks are stopped. This cannot be undone.",
        word: "delete",
        action: "Delete",
      });
      if (!ok) return;
      try {
        await ecs("DeleteService", { cluster, service: s.serviceName, force: true });
        showSuccess(`Service ${s.serviceName} has been deleted.`, true);
        go(`${base}/services`);
      } catch (e) {
        showError(e, `Could not delete service ${s.serviceName}`);
      }
    },
    { class: "danger" },
  );

  const section = h(
    "section",
    {},
    crumbs([["/clusters", "Clusters"], [`${base}/services`, cluster]], s.serviceName),
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, s.serviceName),
      h("div", { class: "actions" }, h("a", { class: "button primary", href: `#${base}/services/${seg(s.serviceName)}/update` }, "Update service"), del),
    ),
    updated,
    body,
    logs,
    metrics,
  );

  // Live: ask again while this page is on screen; stop once it is replaced.
  let last = JSON.stringify(data);
  poll(
    section,
    POLL_MS,
    async () => {
      const d = await load(cluster, service);
      const now = JSON.stringify(d);
      // Only what changed is drawn again (an unchanged view keeps its focus and selection).
      if (section.isConnected && now !== last) {
        last = now;
        body.replaceChildren(live(d));
      }
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    },
    (e) => (updated.textContent = `Could not refresh: ${e.type || "Error"}: ${e.message}`),
  );
  return section;
}
