// The console's shell: hash routes (shareable links, no page reloads) to page modules, the
// navigation's current section, the header's region switcher, errors of a page's loading
// shown in the banner, and, when the server verifies requests, sign-in and sign-out.

import { h, onNavigate, showError } from "./ui.js";
import { region, setRegion } from "./api.js";
import { credentials, required, signOut } from "./sigv4.js";
import * as signIn from "./pages/sign-in.js";
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
import * as repositories from "./pages/repositories.js";
import * as loadBalancers from "./pages/load-balancers.js";
import * as namespaces from "./pages/namespaces.js";
import * as logGroups from "./pages/log-groups.js";
import * as alarms from "./pages/alarms.js";
import * as scalingPolicies from "./pages/scaling-policies.js";

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
  ["/repositories", repositories],
  ["/repositories/:name", repositories],
  ["/load-balancers", loadBalancers],
  ["/load-balancers/:name", loadBalancers],
  ["/namespaces", namespaces],
  ["/namespaces/:id", namespaces],
  ["/log-groups", logGroups],
  ["/log-groups/:name", logGroups],
  ["/alarms", alarms],
  ["/alarms/:name", alarms],
  ["/scaling-policies", scalingPolicies],
  ["/scaling-policies/:resource/:name", scalingPolicies],
];

// Regions the switcher offers (AWS's commercial ones); the server's default is always there.
const REGIONS = [
  "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
  "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1", "eu-south-1",
  "ap-south-1", "ap-northeast-1", "ap-northeast-2", "ap-southeast-1", "ap-southeast-2",
];

function regionSwitcher() {
  const sel = document.getElementById("region");
  const all = [...new Set([sel.dataset.default, ...REGIONS])];
  sel.replaceChildren(...all.map((r) => h("option", { value: r, selected: r === region() }, r)));
  sel.addEventListener("change", () => {
    setRegion(sel.value);
    // Every page shows one region's resources: start again from the section's list.
    const section = location.hash.replace(/^#/, "").split("?")[0].split("/")[1] || "clusters";
    if (location.hash === `#/${section}`) route();
    else go(`/${section}`);
  });
}

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

// The errors that mean the key is not (or no longer) accepted: sign in again.
const REFUSED = new Set([
  "SignInRequired", "UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
  "SignatureDoesNotMatch", "ExpiredTokenException", "ExpiredToken", "IncompleteSignature", "MissingAuthenticationToken",
]);

/** The header's account (the signed-in key's when there is one) and its Sign out button. */
function showIdentity() {
  const who = credentials();
  document.getElementById("account").textContent = who?.account || document.body.dataset.account;
  const out = document.getElementById("sign-out");
  if (out) out.hidden = !who;
}

/** Shows the sign-in form in place of the page; the route is shown once signed in. */
function showSignIn() {
  generation++;
  showIdentity();
  const view = document.getElementById("view");
  view.replaceChildren(signIn.render(() => (showIdentity(), route())));
  document.title = "Sign in · estiba";
  document.body.dataset.route = "sign-in";
}

async function route() {
  const hash = location.hash.replace(/^#/, "");
  const [path, queryString] = hash.split("?");
  if (!path || path === "/") return go("/clusters");
  if (required() && !credentials()) return showSignIn();
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
    if (required() && REFUSED.has(e.type)) {
      signOut();
      showSignIn();
      return showError(e, "Sign in again");
    }
    view.replaceChildren(h("h1", {}, "Could not load this page"));
    showError(e);
  }
  done();
}

/** Renders the current route again (after an action changed what it shows). */
export const refresh = route;

/** The "Refresh" button of list and detail pages. */
export const refreshButton = () => h("button", { type: "button", onclick: () => refresh() }, "Refresh");

function signOutButton() {
  if (!required()) return;
  const button = h("button", { type: "button", id: "sign-out", class: "sign-out" }, "Sign out");
  button.addEventListener("click", () => (signOut(), showSignIn()));
  document.querySelector("header.top").append(button);
}

window.addEventListener("hashchange", route);
regionSwitcher();
signOutButton();
showIdentity();
route();
