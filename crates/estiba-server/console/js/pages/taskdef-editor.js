// The task definition JSON editor: the whole RegisterTaskDefinition input as JSON, checked as
// you type, registered as a new revision. "Create new revision" starts from an existing one
// (its registerable members and tags); "Create new task definition" from a small template.

import { ecs } from "../api.js";
import { h, seg, showError, showSuccess } from "../ui.js";
import { go } from "../app.js";

// RegisterTaskDefinition's members; the rest of a described task definition (ARN, revision,
// status, registeredAt...) is ECS's to set.
export const REGISTERABLE = [
  "family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions", "volumes",
  "placementConstraints", "requiresCompatibilities", "cpu", "memory", "pidMode", "ipcMode",
  "proxyConfiguration", "inferenceAccelerators", "ephemeralStorage", "runtimePlatform", "enableFaultInjection",
];

const TEMPLATE = {
  family: "",
  requiresCompatibilities: ["FARGATE"],
  networkMode: "awsvpc",
  cpu: "256",
  memory: "512",
  runtimePlatform: { operatingSystemFamily: "LINUX", cpuArchitecture: "X86_64" },
  containerDefinitions: [
    { name: "app", image: "", essential: true, portMappings: [{ containerPort: 80, protocol: "tcp" }] },
  ],
};

export async function render({ family, revision }) {
  let start = TEMPLATE;
  let title = "Create new task definition with JSON";
  if (family) {
    const out = await ecs("DescribeTaskDefinition", { taskDefinition: `${family}:${revision}`, include: ["TAGS"] });
    start = {};
    for (const k of REGISTERABLE) if (out.taskDefinition[k] !== undefined) start[k] = out.taskDefinition[k];
    if ((out.tags || []).length) start.tags = out.tags;
    title = `Create new revision of ${family} with JSON`;
  }
  const editor = h("textarea", { id: "taskdef-json-editor", class: "json-editor", spellcheck: "false", rows: "28", "aria-describedby": "json-status" });
  editor.value = JSON.stringify(start, null, 2);
  const note = h("p", { id: "json-status", class: "hint", role: "status" }, "Valid JSON.");
  const submit = h("button", { type: "submit", class: "primary" }, "Create");

  const parse = () => {
    try {
      const v = JSON.parse(editor.value);
      if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("the task definition must be a JSON object");
      note.textContent = "Valid JSON.";
      note.classList.remove("invalid");
      editor.removeAttribute("aria-invalid");
      return v;
    } catch (e) {
      note.textContent = `Invalid JSON: ${e.message}`;
      note.classList.add("invalid");
      editor.setAttribute("aria-invalid", "true");
      return null;
    }
  };
  editor.addEventListener("input", parse);

  const form = h(
    "form",
    { class: "form" },
    h("label", { for: "taskdef-json-editor" }, "Task definition JSON"),
    editor,
    note,
    h("div", { class: "actions" }, h("a", { class: "button", href: family ? `#/task-definitions/${seg(family)}/${revision}` : "#/task-definitions" }, "Cancel"), submit),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = parse();
    if (!input) {
      showError({ type: "ValidationError", message: note.textContent }, "Task definition creation failed");
      return;
    }
    await register(input, submit);
  });
  return page(title, form);
}

/** Registers `input` (the form's `submit` button busy meanwhile), then opens the new revision;
 * the API's refusal goes to the banner. Shared by the JSON editor and the form. */
export async function register(input, submit) {
  submit.disabled = true;
  submit.setAttribute("aria-busy", "true");
  try {
    const out = await ecs("RegisterTaskDefinition", input);
    const td = out.taskDefinition;
    showSuccess(`Task definition ${td.family}:${td.revision} has been created successfully.`, true);
    go(`/task-definitions/${seg(td.family)}/${td.revision}`);
  } catch (e) {
    showError(e, "Task definition creation failed");
  } finally {
    submit.disabled = false;
    submit.removeAttribute("aria-busy");
  }
}

/** A task definition page: breadcrumb, heading, `body`. */
export function page(title, body) {
  return h(
    "section",
    {},
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/task-definitions" }, "Task definitions"), ` › ${title}`),
    h("h1", {}, title),
    body,
  );
}
