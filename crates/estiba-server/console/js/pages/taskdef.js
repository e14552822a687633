// A task definition revision: its overview, containers and JSON; create a new revision from it,
// deregister it, delete it once inactive (DeleteTaskDefinitions), and deploy it: Create service
// or Run task in a chosen cluster (the deploy forms, prefilled with this revision).

import { ecs, listAll } from "../api.js";
import { h, table, seg, status, time, arnName, labelled, select, showError, showSuccess, confirmDialog, actionButton, panel } from "../ui.js";
import { go, refresh } from "../app.js";

export async function render({ family, revision }) {
  const ref = `${family}:${revision}`;
  const out = await ecs("DescribeTaskDefinition", { taskDefinition: ref, include: ["TAGS"] });
  const td = out.taskDefinition;
  const base = `/task-definitions/${seg(family)}`;

  const actions = [
    h("a", { class: "button", href: `#${base}/${revision}/revise-json` }, "Create new revision with JSON"),
    h("a", { class: "button primary", href: `#${base}/${revision}/revise` }, "Create new revision"),
  ];
  if (td.status === "ACTIVE") {
    actions.push(
      actionButton("Deregister", async () => {
        try {
          await ecs("DeregisterTaskDefinition", { taskDefinition: ref });
          showSuccess(`Task definition ${ref} has been deregistered.`, true);
          refresh();
        } catch (e) {
          showError(e, `Could not deregister ${ref}`);
        }
      }),
    );
  }
  if (td.status === "INACTIVE") {
    actions.push(
      actionButton(
        "Delete",
        async () => {
          const ok = await confirmDialog({
            title: `Delete ${ref}?`,
            text: "The revision is deleted once no task or service uses it. This cannot be undone.",
            word: "delete",
            action: "Delete",
          });
          if (!ok) return;
          try {
            const r = await ecs("DeleteTaskDefinitions", { taskDefinitions: [ref] });
            const f = (r.failures || [])[0];
            if (f) throw { type: "DeleteFailed", message: `${f.arn || ref}: ${f.reason}${f.detail ? ` (${f.detail})` : ""}` };
            showSuccess(`Task definition ${ref} is being deleted.`, true);
            go(base);
          } catch (e) {
            showError(e, `Could not delete ${ref}`);
          }
        },
        { class: "danger" },
      ),
    );
  }

  const containers = (td.containerDefinitions || []).map((c) => [
    c.name,
    h("span", { class: "mono" }, c.image),
    c.essential === false ? "No" : "Yes",
    c.cpu ? String(c.cpu) : "-",
    [c.memory && `hard ${c.memory}`, c.memoryReservation && `soft ${c.memoryReservation}`].filter(Boolean).join(", ") || "-",
    (c.portMappings || []).map((p) => `${p.containerPort}${p.hostPort ? `:${p.hostPort}` : ""}/${p.protocol || "tcp"}${p.name ? ` (${p.name})` : ""}`).join(", ") || "-",
  ]);
  const platform = td.runtimePlatform || {};
  let deploy = null;
  if (td.status === "ACTIVE") {
    const clusters = (await listAll("ecs", "ListClusters", { maxResults: 100 }, "clusterArns")).map(arnName).sort();
    const cluster = select(clusters.map((c) => [c, c]), clusters[0]);
    const to = (what) => () => go(`/clusters/${seg(cluster.value)}/${what}?family=${seg(family)}&revision=${seg(revision)}`);
    deploy = h(
      "div",
      { class: "panel" },
      h("h2", {}, "Deploy"),
      clusters.length
        ? h(
            "div",
            { class: "form deploy" },
            labelled("Cluster", cluster),
            h(
              "div",
              { class: "actions" },
              h("button", { type: "button", onclick: to("run-task") }, "Run task"),
              h("button", { type: "button", class: "primary", onclick: to("services/create") }, "Create service"),
            ),
          )
        : h("p", {}, "No clusters yet: ", h("a", { href: "#/clusters/create" }, "create a cluster"), " to deploy this revision into."),
    );
  }
  return h(
    "section",
    {},
    h(
      "nav",
      { class: "crumbs", "aria-label": "Breadcrumb" },
      h("a", { href: "#/task-definitions" }, "Task definitions"),
      " › ",
      h("a", { href: `#${base}` }, family),
      ` › ${revision}`,
    ),
    h("div", { class: "page-head" }, h("h1", {}, ref), h("div", { class: "actions" }, actions)),
    panel("Overview", [
      ["ARN", td.taskDefinitionArn],
      ["Status", status(td.status)],
      ["App environment", (td.requiresCompatibilities || []).join(", ")],
      ["Operating system/Architecture", [platform.operatingSystemFamily, platform.cpuArchitecture].filter(Boolean).join("/")],
      ["Task size", [td.cpu && `${td.cpu} CPU units`, td.memory && `${td.memory} MiB memory`].filter(Boolean).join(", ")],
      ["Network mode", td.networkMode],
      ["Task role", td.taskRoleArn],
      ["Task execution role", td.executionRoleArn],
      ["Registered at", time(td.registeredAt)],
      ["Tags", (out.tags || []).map((t) => `${t.key}=${t.value}`).join(", ")],
    ]),
    deploy,
    table("Containers", ["Container name", "Image", "Essential", "CPU", "Memory (MiB)", "Port mappings"], containers),
    h("div", { class: "panel" }, h("h2", {}, "JSON"), h("pre", { class: "json", id: "taskdef-json" }, JSON.stringify(td, null, 2))),
  );
}
