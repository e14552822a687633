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
