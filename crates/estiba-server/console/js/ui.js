// Small DOM helpers shared by the pages: an element builder, tables, the banner, dialogs and
// formatting. No page logic here.

/** Creates an element: h("a", {href: "#/x", class: "b"}, "text", child...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** A table with a caption (for screen readers and tests), column headers and rows of cells. */
export function table(caption, headers, rows, empty = "No resources found.") {
  const t = h(
    "table",
    { class: "grid" },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      rows.length
        ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))
        : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, empty)),
    ),
  );
  // Wide tables scroll by themselves, not the page.
  return h("div", { class: "table-wrap" }, t);
}

/** Label/value pairs, as the console's overview panels show them. */
export function details(pairs) {
  return h(
    "dl",
    { class: "details" },
    pairs.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v === undefined || v === "" ? "-" : v))),
  );
}

/** A panel: a heading over label/value pairs (the console's overview panels). */
export const panel = (title, pairs) => h("div", { class: "panel" }, h("h2", {}, title), details(pairs));

const banner = () => document.getElementById("banner");
let flashed = null;

/** Shows an API error (type and message) or any other error in the banner. */
export function showError(err, what) {
  const b = banner();
  const type = err && err.type ? err.type : "Error";
  const message = err && err.message ? err.message : String(err);
  b.className = "banner error";
  b.replaceChildren(
    h("strong", { class: "banner-title" }, what || "The request failed"),
    h("span", { class: "banner-type" }, type),
    h("span", { class: "banner-message" }, message),
    h("button", { type: "button", class: "banner-close", "aria-label": "Dismiss", onclick: clearBanner }, "×"),
  );
  b.hidden = false;
  b.scrollIntoView({ block: "nearest" });
}

/** Shows a success message; `flash` keeps it through the next navigation. */
export function showSuccess(message, flash = false) {
  const b = banner();
  b.className = "banner success";
  b.replaceChildren(
    h("span", { class: "banner-message" }, message),
    h("button", { type: "button", class: "banner-close", "aria-label": "Dismiss", onclick: clearBanner }, "×"),
  );
  b.hidden = false;
  if (flash) flashed = message;
}

export function clearBanner() {
  const b = banner();
  b.hidden = true;
  b.replaceChildren();
}

/** Called by the router on navigation: clears the banner unless a message was flashed. */
export function onNavigate() {
  if (flashed) {
    const m = flashed;
    flashed = null;
    showSuccess(m);
  } else clearBanner();
}

/** A modal confirmation asking to type `word`; resolves true when confirmed. */
export function confirmDialog({ title, text, word, action }) {
  return new Promise((resolve) => {
    const input = h("input", { type: "text", id: "confirm-input", autocomplete: "off" });
    const ok = h("button", { type: "submit", class: "danger", value: "confirm", disabled: true }, action);
    input.addEventListener("input", () => (ok.disabled = input.value !== word));
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-title" },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: "confirm-title" }, title),
        h("p", {}, text),
        h("label", { for: "confirm-input" }, `To confirm, type "${word}" in the field.`),
        input,
        h(
          "div",
          { class: "actions" },
          h("button", { type: "button", onclick: () => dialog.close("cancel") }, "Cancel"),
          ok,
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "confirm" && input.value === word);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

/** A button that disables itself while `fn` runs (long operations show progress). */
export function actionButton(label, fn, attrs = {}) {
  const b = h("button", { type: "button", ...attrs }, label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    b.setAttribute("aria-busy", "true");
    try {
      await fn();
    } finally {
      b.disabled = false;
      b.removeAttribute("aria-busy");
    }
  });
  return b;
}

/** The last part of an ARN's resource (`.../name` → `name`). */
export const arnName = (arn) => (arn ? arn.split("/").pop() : "");

/** A time (seconds since the epoch, as the JSON APIs answer) in the reader's locale. */
export function time(t) {
  if (t === undefined || t === null) return "-";
  return new Date(t * 1000).toLocaleString();
}

/** A link to a route. */
export const link = (route, text) => h("a", { href: `#${route}` }, text);

/** An encoded path segment for routes. */
export const seg = (s) => encodeURIComponent(s);

/** A status badge. */
export function status(s) {
  return h("span", { class: `status status-${String(s || "").toLowerCase()}` }, s || "-");
}

/** A "Loading…" placeholder. */
export const loading = () => h("p", { class: "loading", role: "status" }, "Loading…");

let ids = 0;

/** A fresh element id with `prefix`. */
export const uid = (prefix = "f") => `${prefix}-${++ids}`;

/** A labelled form control: a visible label whose `for` names the control, and an optional
 * hint the control is described by. */
export function labelled(text, control, hint) {
  if (!control.id) control.id = uid("f");
  const parts = [h("label", { for: control.id }, text), control];
  if (hint !== undefined) {
    const hintEl = hint instanceof Node ? hint : h("p", { class: "hint" }, hint);
    if (!hintEl.id) hintEl.id = uid("hint");
    control.setAttribute("aria-describedby", hintEl.id);
    parts.push(hintEl);
  }
  return h("div", { class: "field" }, parts);
}

/** A checkbox with its label after it; `.input` is the checkbox. */
export function checkbox(text, checked = false) {
  const input = h("input", { type: "checkbox", id: uid("c"), checked });
  const el = h("div", { class: "check" }, input, h("label", { for: input.id }, text));
  el.input = input;
  return el;
}

/** Options for a select: `[value, text]` pairs, `current` selected. */
export const options = (pairs, current) =>
  pairs.map(([v, t]) => h("option", { value: v, selected: String(v) === String(current ?? "") }, t));

/** An editable list of rows (port mappings, environment variables, tags...). `columns` are
 * `[label, make(value) => control]`; every cell's control has its column's label (visually
 * hidden: the header shows it). `.add(values)` appends a row, `.values()` reads every row as a
 * list of control values. */
export function rowsEditor(columns, addLabel, initial = []) {
  const body = h("tbody");
  const add = (values = []) => {
    const tr = h("tr");
    columns.forEach(([label, make], i) => {
      const control = make(values[i]);
      control.id = uid("r");
      tr.append(h("td", {}, h("label", { for: control.id, class: "sr-only" }, label), control));
    });
    tr.append(h("td", {}, h("button", { type: "button", onclick: () => tr.remove() }, "Remove")));
    body.append(tr);
    return tr;
  };
  for (const v of initial) add(v);
  const el = h(
    "div",
    { class: "rows-editor" },
    h("div", { class: "table-wrap" }, h("table", { class: "rows" }, h("thead", {}, h("tr", {}, columns.map(([l]) => h("th", {}, l)), h("th"))), body)),
    h("button", { type: "button", onclick: () => add() }, addLabel),
  );
  el.add = add;
  el.values = () =>
    [...body.rows].map((tr) => [...tr.querySelectorAll("input, select")].map((c) => (c.type === "checkbox" ? c.checked : c.value)));
  return el;
}

/** A text input with a value. */
export const textInput = (value, attrs = {}) => h("input", { type: "text", value: value ?? "", autocomplete: "off", ...attrs });

/** A number input with a value. */
export const numberInput = (value, attrs = {}) => h("input", { type: "number", value: value ?? "", ...attrs });

/** A select of `[value, text]` pairs. */
export const select = (pairs, current, attrs = {}) => h("select", attrs, options(pairs, current));

/** The tags editor every create form has (Key / Value rows); `.tags()` reads the rows that are
 * not blank as the API's `[{key, value}]`. */
export function tagsEditor(initial = []) {
  const el = rowsEditor([["Key", (v) => textInput(v)], ["Value", (v) => textInput(v)]], "Add tag", initial.map((t) => [t.key, t.value]));
  el.tags = () => el.values().filter(([k, v]) => k || v).map(([key, value]) => ({ key, value }));
  return el;
}

/** Wires a form's submit: waits for `pending()` (choices still loading), runs `run()` with the
 * submit button busy, and shows a failure under `failTitle` in the banner. `check()` may
 * return a message that stops the submit before any call. */
export function onSubmit(form, submit, { run, failTitle, check = () => null, pending = () => null }) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    submit.setAttribute("aria-busy", "true");
    try {
      await pending();
      const problem = check();
      if (problem) return showError({ type: "ValidationError", message: problem }, failTitle);
      await run();
    } catch (e) {
      showError(e, failTitle);
    } finally {
      submit.disabled = false;
      submit.removeAttribute("aria-busy");
    }
  });
}

/** Calls `tick()` every `ms` while `el` is on screen and the tab visible, one call at a time;
 * stops once `el` is replaced or `tick` returns `false`. Errors go to `onError`. */
export function poll(el, ms, tick, onError = () => {}) {
  let busy = false;
  const timer = setInterval(async () => {
    if (!el.isConnected) return clearInterval(timer);
    if (busy || document.hidden) return;
    busy = true;
    try {
      if ((await tick()) === false) clearInterval(timer);
    } catch (e) {
      if (el.isConnected) onError(e);
    } finally {
      busy = false;
    }
  }, ms);
  return () => clearInterval(timer);
}

/** A radio choice of `[value, text]` pairs under a legend; `.value` is the checked one and
 * `onchange` is called with it. */
export function radios(legend, pairs, current, onchange = () => {}) {
  const name = uid("radio");
  const el = h(
    "fieldset",
    { class: "inner" },
    h("legend", {}, legend),
    pairs.map(([v, t]) => {
      const input = h("input", { type: "radio", name, value: v, id: uid("r"), checked: v === current });
      input.addEventListener("change", () => onchange(v));
      return h("div", { class: "check" }, input, h("label", { for: input.id }, t));
    }),
  );
  Object.defineProperty(el, "value", { get: () => el.querySelector("input:checked")?.value });
  return el;
}

/** A page's breadcrumb: `[route, text]` links, then the current page's name. */
export function crumbs(links, current) {
  return h(
    "nav",
    { class: "crumbs", "aria-label": "Breadcrumb" },
    links.flatMap(([route, text]) => [h("a", { href: `#${route}` }, text), " › "]),
    current,
  );
}

/** A list page's head: the title with a count, and actions. */
export function pageHead(title, count, ...actions) {
  return h(
    "div",
    { class: "page-head" },
    h("h1", {}, title, count === undefined ? "" : h("span", { class: "count" }, ` (${count})`)),
    h("div", { class: "actions" }, actions),
  );
}
