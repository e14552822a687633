// Clusters: the list, with each cluster's services, tasks running and pending, and container
// instances (DescribeClusters' counts), and its Container Insights setting.

import { listAll, describeAll } from "../api.js";
import { h, table, link, seg, status } from "../ui.js";
import { refresh } from "../app.js";

export async function render() {
  const arns = await listAll("ecs", "ListClusters", {}, "clusterArns");
  const { items } = await describeAll("ecs", "DescribeClusters", { include: ["SETTINGS"] }, "clusters", arns, "clusters", 100);
  items.sort((a, b) => a.clusterName.localeCompare(b.clusterName));
  const insights = (c) => (c.settings || []).find((s) => s.name === "containerInsights")?.value || "disabled";
  const rows = items.map((c) => [
    link(`/clusters/${seg(c.clusterName)}`, c.clusterName),
    status(c.status),
    String(c.activeServicesCount ?? 0),
    String(c.runningTasksCount ?? 0),
    String(c.pendingTasksCount ?? 0),
    String(c.registeredContainerInstancesCount ?? 0),
    insights(c),
    (c.capacityProviders || []).join(", ") || "-",
  ]);
  return h(
    "section",
    {},
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Clusters ", h("span", { class: "count" }, `(${items.length})`)),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", onclick: () => refresh() }, "Refresh"),
        h("a", { class: "button primary", href: "#/clusters/create" }, "Create cluster"),
      ),
    ),
    table(
      "Clusters",
      ["Cluster", "Status", "Services", "Tasks running", "Tasks pending", "Container instances", "Container Insights", "Capacity providers"],
      rows,
      "No clusters. Create one to run tasks and services.",
    ),
  );
}
