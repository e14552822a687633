// A cluster: its overview, tabs for services, tasks, infrastructure (capacity providers and
// container instances with their resources and attributes) and metrics (graphs from
// js/watch.js), and delete with the API's refusal (for example a cluster that still has
// services) shown in the banner.

import { ecs, listAll, describeAll } from "../api.js";
import { h, table, link, seg, status, arnName, time, showError, showSuccess, confirmDialog, actionButton, panel } from "../ui.js";
import { go, refresh, refreshButton } from "../app.js";
import { metricsPanel } from "../watch.js";


const TABS = [
  ["services", "Services"],
  ["tasks", "Tasks"],
  ["infrastructure", "Infrastructure"],
  ["metrics", "Metrics"],
];

export async function render({ cluster: name, tab = "services", query }) {
  const out = await ecs("DescribeClusters", { clusters: [name], include: ["SETTINGS", "STATISTICS", "TAGS"] });
  const c = (out.clusters || [])[0];
  if (!c) {
    const f = (out.failures || [])[0];
    throw { type: "ClusterNotFoundException", message: `Cluster ${name} ${f ? `: ${f.reason}` : "was not found"}.` };
  }
  if (!TABS.some(([t]) => t === tab)) tab = "services";
  const insights = (c.settings || []).find((s) => s.name === "containerInsights")?.value || "disabled";
  const strategy = (c.defaultCapacityProviderStrategy || []).map((s) => `${s.capacityProvider} (base ${s.base ?? 0}, weight ${s.weight ?? 0})`).join(", ");

  const del = actionButton("Delete cluster", async () => {
    const ok = await confirmDialog({
      title: `Delete ${c.clusterName}?`,
      text: "Deleting the cluster cannot be undone. A cluster with active services or registered container instances cannot be deleted.",
      word: "delete",
      action: "Delete",
    });
    if (!ok) return;
    try {
      await ecs("DeleteCluster", { cluster: c.clusterName });
      showSuccess(`Cluster ${c.clusterName} has been deleted.`, true);
      go("/clusters");
    } catch (e) {
      showError(e, `Could not delete cluster ${c.clusterName}`);
    }
  }, { class: "danger" });

  const body = await TAB_RENDER[tab](c, query);
  return h(
    "section",
    {},
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/clusters" }, "Clusters"), ` › ${c.clusterName}`),
    h("div", { class: "page-head" }, h("h1", {}, c.clusterName), h("div", { class: "actions" }, refreshButton(), del)),
    panel("Cluster overview", [
      ["ARN", c.clusterArn],
      ["Status", status(c.status)],
      ["Services", String(c.activeServicesCount ?? 0)],
      ["Tasks running", String(c.runningTasksCount ?? 0)],
      ["Tasks pending", String(c.pendingTasksCount ?? 0)],
      ["Container instances", String(c.registeredContainerInstancesCount ?? 0)],
      ["Container Insights", insights],
      ["Capacity providers", (c.capacityProviders || []).join(", ")],
      ["Default capacity provider strategy", strategy],
      ["Tags", (c.tags || []).map((t) => `${t.key}=${t.value}`).join(", ")],
    ]),
    h(
      "nav",
      { class: "tabs", "aria-label": "Cluster tabs" },
      TABS.map(([t, label]) => h("a", { href: `#/clusters/${seg(c.clusterName)}/${t}`, "aria-current": t === tab ? "page" : null }, label)),
    ),
    h("div", { class: "tab-body", id: `tab-${tab}` }, body),
  );
}

const TAB_RENDER = { services, tasks, infrastructure, metrics };

// The cluster's AWS/ECS utilization, and with Container Insights its task counts.
async function metrics(c) {
  const dims = { ClusterName: c.clusterName };
  const graphs = [
    { id: "cpu", title: "CPUUtilization", unit: "Percent", stat: "Average", namespace: "AWS/ECS", metric: "CPUUtilization", dimensions: dims },
    { id: "memory", title: "MemoryUtilization", unit: "Percent", stat: "Average", namespace: "AWS/ECS", metric: "MemoryUtilization", dimensions: dims },
  ];
  const insights = (c.settings || []).find((s) => s.name === "containerInsights")?.value || "disabled";
  if (insights !== "disabled") {
    graphs.push({ id: "running", title: "RunningTaskCount", unit: "Count", stat: "Average", namespace: "ECS/ContainerInsights", metric: "RunningTaskCount", dimensions: dims });
  }
  return metricsPanel(graphs, "Cluster metrics");
}

async function services(c) {
  const arns = await listAll("ecs", "ListServices", { cluster: c.clusterArn, maxResults: 100 }, "serviceArns");
  const { items } = await describeAll("ecs", "DescribeServices", { cluster: c.clusterArn }, "services", arns, "services", 10);
  items.sort((a, b) => a.serviceName.localeCompare(b.serviceName));
  const compute = (s) =>
    s.launchType || (s.capacityProviderStrategy || []).map((p) => p.capacityProvider).join(", ") || "-";
  const rollout = (s) => {
    const primary = (s.deployments || []).find((d) => d.status === "PRIMARY");
    return primary ? primary.rolloutState || "-" : "-";
  };
  const create = h("a", { class: "button primary", href: `#/clusters/${seg(c.clusterName)}/services/create` }, "Create service");
  return h("div", {}, h("div", { class: "filters" }, create), table(
    "Services",
    ["Service name", "Status", "Compute", "Task definition", "Desired tasks", "Running tasks", "Pending tasks", "Deployment"],
    items.map((s) => [
      link(`/clusters/${seg(c.clusterName)}/services/${seg(s.serviceName)}`, s.serviceName),
      status(s.status),
      compute(s),
      taskDefLink(s.taskDefinition),
      String(s.desiredCount ?? 0),
      String(s.runningCount ?? 0),
      String(s.pendingCount ?? 0),
      rollout(s),
    ]),
    "No services in this cluster.",
  ));
}

function taskDefLink(arn) {
  if (!arn) return "-";
  const fr = arnName(arn);
  const [family, revision] = fr.split(":");
  return link(`/task-definitions/${seg(family)}/${seg(revision)}`, fr);
}

async function tasks(c, query) {
  const desired = query.get("desiredStatus") || "RUNNING";
  // One page of 100 tasks at a time, as the ECS console pages its task list: a cluster of
  // thousands of tasks loads as fast as one of a hundred.
  const token = query.get("nextToken");
  const page = await ecs("ListTasks", { cluster: c.clusterArn, desiredStatus: desired, maxResults: 100, ...(token ? { nextToken: token } : {}) });
  const { items } = await describeAll("ecs", "DescribeTasks", { cluster: c.clusterArn }, "tasks", page.taskArns || [], "tasks", 100);
  const here = `/clusters/${seg(c.clusterName)}/tasks?desiredStatus=${desired}`;
  const pager = h(
    "nav",
    { class: "filters pager", "aria-label": "Task pages" },
    token ? h("a", { href: `#${here}` }, "First page") : null,
    page.nextToken ? h("a", { href: `#${here}&nextToken=${encodeURIComponent(page.nextToken)}` }, "Next page") : null,
  );
  items.sort((a, b) => (b.createdAt || 0) - (a.createdAt || 0));
  const filter = h(
    "select",
    {
      id: "desired-status",
      onchange: (e) => go(`/clusters/${seg(c.clusterName)}/tasks?desiredStatus=${e.target.value}`),
    },
    ["RUNNING", "STOPPED"].map((s) => h("option", { value: s, selected: s === desired }, s === "RUNNING" ? "Running" : "Stopped")),
  );
  return h(
    "div",
    {},
    h(
      "div",
      { class: "filters" },
      h("label", { for: "desired-status" }, "Filter desired status"),
      filter,
      h("a", { class: "button primary", href: `#/clusters/${seg(c.clusterName)}/run-task` }, "Run new task"),
    ),
    table(
      "Tasks",
      ["Task", "Last status", "Desired status", "Task definition", "Group", "Launch type", "Health status", "Created at"],
      items.map((t) => [
        h("a", { class: "mono", title: t.taskArn, href: `#/clusters/${seg(c.clusterName)}/tasks/${seg(arnName(t.taskArn))}` }, arnName(t.taskArn)),
        status(t.lastStatus),
        t.desiredStatus,
        taskDefLink(t.taskDefinitionArn),
        t.group || "-",
        t.launchType || (t.capacityProviderName ?? "-"),
        t.healthStatus || "-",
        time(t.createdAt),
      ]),
      desired === "RUNNING" ? "No running tasks." : "No stopped tasks.",
    ),
    pager,
  );
}

async function infrastructure(c) {
  const arns = await listAll("ecs", "ListContainerInstances", { cluster: c.clusterArn, maxResults: 100 }, "containerInstanceArns");
  const { items } = await describeAll(
    "ecs",
    "DescribeContainerInstances",
    { cluster: c.clusterArn },
    "containerInstances",
    arns,
    "containerInstances",
    100,
  );
  const resource = (list, name) => {
    const r = (list || []).find((x) => x.name === name);
    return r ? r.integerValue ?? r.doubleValue ?? r.longValue ?? "-" : "-";
  };
  const strategy = new Map((c.defaultCapacityProviderStrategy || []).map((s) => [s.capacityProvider, s]));
  return h(
    "div",
    {},
    table(
      "Capacity providers",
      ["Capacity provider", "Base", "Weight"],
      (c.capacityProviders || []).map((p) => [p, String(strategy.get(p)?.base ?? "-"), String(strategy.get(p)?.weight ?? "-")]),
      "No capacity providers.",
    ),
    table(
      "Container instances",
      ["Container instance", "EC2 instance ID", "Status", "Agent connected", "Running tasks", "Pending tasks", "CPU available / registered", "Memory available / registered (MiB)", "Attributes"],
      items.map((i) => [
        h("span", { class: "mono", title: i.containerInstanceArn }, arnName(i.containerInstanceArn)),
        i.ec2InstanceId || "-",
        status(i.status),
        i.agentConnected ? "Yes" : "No",
        String(i.runningTasksCount ?? 0),
        String(i.pendingTasksCount ?? 0),
        `${resource(i.remainingResources, "CPU")} / ${resource(i.registeredResources, "CPU")}`,
        `${resource(i.remainingResources, "MEMORY")} / ${resource(i.registeredResources, "MEMORY")}`,
        h(
          "details",
          {},
          h("summary", {}, `${(i.attributes || []).length} attributes`),
          h("ul", { class: "attrs" }, (i.attributes || []).map((a) => h("li", {}, h("code", {}, a.name), a.value ? ` = ${a.value}` : ""))),
        ),
      ]),
      "No container instances. Machines join with estiba server --join-cluster NAME.",
    ),
  );
}
