// The console's shell: hash routes (shareable links, no page reloads) to page modules, the
// navigation's current section, and errors of a page's loading shown in the banner.

import { h, onNavigate, showError } from "./ui.js";
import * as clusters from "./pages/clusters.js";
import * as clusterCreate from "./pages/cluster-create.js";
import * as cluster from "./pages/cluster.js";
import * as taskdefs from "./pages/taskdefs.js";
import * as taskdef from "./pages/taskdef.js";
import * as taskdefEditor from "./pages/taskdef-editor.js";
import * as taskdefForm from "./pages/taskdef-form.js";
import * as deployForm from "./pages/deploy-form.js";
import * as service from "./pages/service.js";
import * as serviceUpdate from "./pages/service-update.js";
import * as task from "./pages/task.js";

const createService = { render: (p) => deployForm.render({ ...p, kind: "service" }) };
const runTask = { render: (p) => deployForm.render({ ...p, kind: "task" }) };

// Routes, first match wins: a pattern's `:name` segments become params.
const ROUTES = [
  ["/clusters", clusters],
  ["/clusters/create", clusterCreate],
  ["/clusters/:cluster", cluster],
  ["/clusters/:cluster/run-task", runTask],
  ["/clusters/:cluster/:tab", cluster],
  ["/clusters/:cluster/services/create", createService],
  ["/clusters/:cluster/services/:service", service],
  ["/clusters/:cluster/services/:service/update", serviceUpdate],
  ["/clusters/:cluster/tasks/:task", task],
  ["/task-definitions", taskdefs],
  ["/task-definitions/create", taskdefForm],
  ["/task-definitions/create-json", taskdefEditor],
  ["/task-definitions/:family", taskdefs],
  ["/task-definitions/:family/:revision", taskdef],
  ["/task-definitions/:family/:revision/revise", taskdefForm],
  ["/task-definitions/:family/:revision/revise-json", taskdefEditor],
];

function match(path) {
  const parts = path.split("/").filter(Boolean);
  for (const [pattern, page] of ROUTES) {
    const want = pattern.split("/").filter(Boolean);
    if (want.length !== parts.length) continue;
    const params = {};
    if (want.every((w, i) => (w.startsWith(":") ? ((params[w.slice(1)] = decodeURIComponent(parts[i])), true) : w === parts[i])))
      return { page, params };
  }
  return null;
}

/** Navigates to a route (`/clusters/x`). */
export function go(route) {
  location.hash = `#${route}`;
}

let generation = 0;

async function route() {
  const hash = location.hash.replace(/^#/, "");
  const [path, queryString] = hash.split("?");
  if (!path || path === "/") return go("/clusters");
  const view = document.getElementById("view");
  const section = path.split("/")[1];
  for (const a of document.querySelectorAll("nav.side a")) {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  onNavigate();
  const found = match(path);
  const mine = ++generation;
  // `data-route` names the route once its page is on screen (tests and tools wait for it).
  document.body.dataset.route = "";
  const done = () => (document.body.dataset.route = hash);
  if (!found) {
    view.replaceChildren(h("h1", {}, "Page not found"), h("p", {}, `Nothing lives at ${path}.`));
    return done();
  }
  const query = new URLSearchParams(queryString || "");
  view.replaceChildren(h("p", { class: "loading", role: "status" }, "Loading…"));
  try {
    // A page renders into a fragment; a newer navigation wins over a slow older one.
    const content = await found.page.render({ ...found.params, query });
    if (mine !== generation) return;
    view.replaceChildren(content);
    document.title = `${view.querySelector("h1")?.textContent || "Console"} · estiba`;
  } catch (e) {
    if (mine !== generation) return;
    view.replaceChildren(h("h1", {}, "Could not load this page"));
    showError(e);
  }
  done();
}

/** Renders the current route again (after an action changed what it shows). */
export const refresh = route;

window.addEventListener("hashchange", route);
route();
