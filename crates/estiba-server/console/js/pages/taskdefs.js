// Task definitions: the families (ListTaskDefinitionFamilies) and, for one family, its
// revisions (ListTaskDefinitions) with their status.

import { listAll } from "../api.js";
import { h, table, link, seg, status, arnName } from "../ui.js";
import { go } from "../app.js";

const STATUSES = [
  ["ACTIVE", "Active"],
  ["INACTIVE", "Inactive"],
];

function statusFilter(id, current, route) {
  return h(
    "div",
    { class: "filters" },
    h("label", { for: id }, "Filter status"),
    h("select", { id, onchange: (e) => go(`${route}?status=${e.target.value}`) }, STATUSES.map(([v, t]) => h("option", { value: v, selected: v === current }, t))),
  );
}

export async function render({ family, query }) {
  const st = query.get("status") === "INACTIVE" ? "INACTIVE" : "ACTIVE";
  return family ? revisions(family, st) : families(st);
}

async function families(st) {
  const names = await listAll("ecs", "ListTaskDefinitionFamilies", { status: st, maxResults: 100 }, "families");
  names.sort();
  // One listing of the revisions (newest first) gives every family's latest and count.
  const arns = await listAll("ecs", "ListTaskDefinitions", { status: st, sort: "DESC", maxResults: 100 }, "taskDefinitionArns");
  const byFamily = new Map();
  for (const fr of arns.map(arnName)) {
    const family = fr.slice(0, fr.lastIndexOf(":"));
    const f = byFamily.get(family) || { latest: fr, count: 0 };
    f.count += 1;
    byFamily.set(family, f);
  }
  return h(
    "section",
    {},
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Task definitions ", h("span", { class: "count" }, `(${names.length})`)),
      h(
        "div",
        { class: "actions" },
        h("a", { class: "button", href: "#/task-definitions/create-json" }, "Create new task definition with JSON"),
        h("a", { class: "button primary", href: "#/task-definitions/create" }, "Create new task definition"),
      ),
    ),
    statusFilter("family-status", st, "/task-definitions"),
    table(
      "Task definition families",
      ["Task definition", `Latest ${st.toLowerCase()} revision`, "Revisions"],
      names.map((n) => {
        const f = byFamily.get(n);
        return [
          link(`/task-definitions/${seg(n)}`, n),
          f ? link(`/task-definitions/${seg(n)}/${f.latest.split(":").pop()}`, f.latest) : "-",
          String(f ? f.count : 0),
        ];
      }),
      "No task definitions.",
    ),
  );
}

async function revisions(family, st) {
  const arns = await listAll("ecs", "ListTaskDefinitions", { familyPrefix: family, status: st, sort: "DESC", maxResults: 100 }, "taskDefinitionArns");
  // familyPrefix matches by prefix: keep this family's revisions only.
  const mine = arns.map(arnName).filter((fr) => fr.slice(0, fr.lastIndexOf(":")) === family);
  return h(
    "section",
    {},
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/task-definitions" }, "Task definitions"), ` › ${family}`),
    h("div", { class: "page-head" }, h("h1", {}, family)),
    statusFilter("revision-status", st, `/task-definitions/${seg(family)}`),
    table(
      "Revisions",
      ["Task definition revision", "Status"],
      mine.map((fr) => [link(`/task-definitions/${seg(family)}/${fr.split(":").pop()}`, fr), status(st)]),
      `No ${st.toLowerCase()} revisions.`,
    ),
  );
}
