// Create a task definition from a form laid out as the ECS console's: family; infrastructure
// (launch type, OS/architecture, network mode, task size as Fargate's CPU/memory combinations
// checked as you type, task role and task execution role); containers (name, image URI with a
// picker of this server's ECR repositories and tags, essential, port mappings, resource limits,
// environment, entry point and command, health check, dependsOn, awslogs log collection, mount
// points); storage (ephemeral storage, bind mount volumes); tags.
// Submitting is one RegisterTaskDefinition call. "Create new revision" prefills the form from a
// revision, and what the form does not show (volumes, other container settings) is kept as it
// was. Nothing here decides what is valid beyond Fargate's sizes: the API's error is shown.

import { ecs, ecr, listAll, region as currentRegion } from "../api.js";
import { h, seg, showError, labelled, checkbox, rowsEditor, textInput, numberInput, select, uid, tagsEditor } from "../ui.js";
import { REGISTERABLE, register, page } from "./taskdef-editor.js";

const range = (from, to, step) => Array.from({ length: (to - from) / step + 1 }, (_, i) => from + i * step);

/** Fargate's task sizes: CPU units and the memory (MiB) each allows. */
export const FARGATE_SIZES = new Map([
  [256, [512, 1024, 2048]],
  [512, range(1024, 4096, 1024)],
  [1024, range(2048, 8192, 1024)],
  [2048, range(4096, 16384, 1024)],
  [4096, range(8192, 30720, 1024)],
  [8192, range(16384, 61440, 4096)],
  [16384, range(32768, 122880, 8192)],
]);

const vcpu = (units) => `${units / 1024} vCPU`;
const gb = (mib) => `${mib / 1024} GB`;

/** Memory as typed ("512", "1 GB", "0.5GB", "2048 MiB") in MiB; NaN when it is not a size. */
export function parseMemory(text) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(gb|gib|mb|mib)?\s*$/i.exec(text);
  if (!m) return NaN;
  const n = Number(m[1]) * (/^g/i.test(m[2] || "") ? 1024 : 1);
  return Number.isInteger(n) ? n : NaN;
}

const list = (text) =>
  text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);

const PROTOCOLS = [["tcp", "TCP"], ["udp", "UDP"]];
const APP_PROTOCOLS = [["", "None"], ["http", "HTTP"], ["http2", "HTTP2"], ["grpc", "gRPC"]];
const CONDITIONS = ["START", "COMPLETE", "SUCCESS", "HEALTHY"].map((c) => [c, c]);
// The container members this form edits; the rest of a revision's container is kept.
const MANAGED = [
  "name", "image", "essential", "portMappings", "cpu", "memory", "memoryReservation", "environment",
  "entryPoint", "command", "workingDirectory", "healthCheck", "dependsOn", "mountPoints",
];
// A volume this form edits: a bind mount (a host path, or none: scoped to the task). Others
// (EFS, Docker volumes...) a revision has are kept as they were.
const isBind = (v) => !v.efsVolumeConfiguration && !v.dockerVolumeConfiguration && !v.fsxWindowsFileServerVolumeConfiguration && !v.configuredAtLaunch;

export async function render({ family, revision }) {
  let base = { family: "", requiresCompatibilities: ["FARGATE"], networkMode: "awsvpc", cpu: "256", memory: "512", containerDefinitions: [{}] };
  let baseTags = [];
  let title = "Create new task definition";
  if (family) {
    const out = await ecs("DescribeTaskDefinition", { taskDefinition: `${family}:${revision}`, include: ["TAGS"] });
    base = {};
    for (const k of REGISTERABLE) if (out.taskDefinition[k] !== undefined) base[k] = out.taskDefinition[k];
    baseTags = out.tags || [];
    title = `Create new revision of ${family}`;
  }
  // The region the console's calls are scoped to (the header's switcher).
  const region = currentRegion();
  // The ECR repositories, asked for once when a picker is first used.
  let repos;
  const repositories = () => (repos ??= listAll("ecr", "DescribeRepositories", { maxResults: 100 }, "repositories"));

  // Task definition configuration.
  const familyInput = textInput(base.family, { required: true, readonly: !!family });

  // Infrastructure requirements.
  const compat = base.requiresCompatibilities || [];
  const fargate = checkbox("AWS Fargate", compat.includes("FARGATE"));
  const ec2 = checkbox("Amazon EC2 instances", compat.includes("EC2"));
  const platform = base.runtimePlatform || {};
  const os = select(
    [["LINUX/X86_64", "Linux/X86_64"], ["LINUX/ARM64", "Linux/ARM64"]],
    `${platform.operatingSystemFamily || "LINUX"}/${platform.cpuArchitecture || "X86_64"}`,
  );
  const networkMode = select([["awsvpc", "awsvpc"], ["bridge", "bridge"], ["host", "host"], ["none", "none"]], base.networkMode || "awsvpc");
  const cpu = select([["", "None (EC2 only)"], ...[...FARGATE_SIZES.keys()].map((u) => [String(u), vcpu(u)])], base.cpu ?? "");
  const memory = textInput(base.memory ?? "", { inputmode: "decimal", list: uid("mem-list") });
  const memoryList = h("datalist", { id: memory.getAttribute("list") });
  const memoryHint = h("p", { class: "hint", id: uid("mem-hint"), role: "status" });
  const taskRole = textInput(base.taskRoleArn, { placeholder: "arn:aws:iam::123456789012:role/..." });
  const executionRole = textInput(base.executionRoleArn, { placeholder: "arn:aws:iam::123456789012:role/ecsTaskExecutionRole" });

  /** Checks the task size as it is typed: Fargate allows only its combinations. Returns an
   * error message, or "" when the size is acceptable. */
  function checkSize() {
    const onFargate = fargate.input.checked;
    const units = Number(cpu.value);
    const allowed = FARGATE_SIZES.get(units) || [];
    memoryList.replaceChildren(...allowed.map((m) => h("option", { value: String(m) }, gb(m))));
    let problem = "";
    const typed = memory.value.trim();
    const mib = parseMemory(typed);
    if (typed && Number.isNaN(mib)) problem = `"${typed}" is not a memory size: give MiB (512) or GB (0.5 GB).`;
    else if (onFargate && !cpu.value) problem = "AWS Fargate needs a task CPU.";
    else if (onFargate && !typed) problem = "AWS Fargate needs a task memory.";
    else if (onFargate && !allowed.includes(mib))
      problem = `With ${vcpu(units)}, AWS Fargate allows a memory of ${allowed.length > 3 ? `${gb(allowed[0])} to ${gb(allowed.at(-1))} in steps of ${gb(allowed[1] - allowed[0])}` : allowed.map(gb).join(", ")}.`;
    memoryHint.textContent = problem || (typed && !Number.isNaN(mib) ? `${mib} MiB (${gb(mib)}).` : "The task's memory, in MiB or GB.");
    memoryHint.classList.toggle("invalid", !!problem);
    if (problem) memory.setAttribute("aria-invalid", "true");
    else memory.removeAttribute("aria-invalid");
    return problem;
  }
  // Fargate tasks use awsvpc.
  const followLaunchType = () => {
    if (fargate.input.checked) networkMode.value = "awsvpc";
    networkMode.disabled = fargate.input.checked;
    checkSize();
  };
  fargate.input.addEventListener("change", followLaunchType);
  cpu.addEventListener("change", checkSize);
  memory.addEventListener("input", checkSize);

  // Containers.
  const containerList = h("div", { class: "containers" });
  const containers = [];
  const addContainer = (def = {}) => {
    const c = containerForm(def, containers.length + 1, { region, family: () => familyInput.value.trim(), repositories });
    containers.push(c);
    c.remove = () => {
      containers.splice(containers.indexOf(c), 1);
      c.el.remove();
    };
    containerList.append(c.el);
    return c;
  };
  for (const def of base.containerDefinitions || [{}]) addContainer(def);

  const tags = tagsEditor(baseTags);

  // Storage: ephemeral storage (Fargate, 21-200 GiB) and bind mount volumes.
  const ephemeral = numberInput(base.ephemeralStorage?.sizeInGiB, { min: "21", max: "200", placeholder: "21" });
  const ephemeralHint = h("p", { class: "hint", role: "status" });
  const checkEphemeral = () => {
    const v = ephemeral.value.trim();
    const n = Number(v);
    const problem = v && !(Number.isInteger(n) && n >= 21 && n <= 200) ? "Ephemeral storage must be a whole number of GiB from 21 to 200." : "";
    ephemeralHint.textContent = problem || "Fargate tasks get 20 GiB unless more is asked for (21 to 200 GiB).";
    ephemeralHint.classList.toggle("invalid", !!problem);
    if (problem) ephemeral.setAttribute("aria-invalid", "true");
    else ephemeral.removeAttribute("aria-invalid");
    return problem;
  };
  ephemeral.addEventListener("input", checkEphemeral);
  checkEphemeral();
  const keptVolumes = (base.volumes || []).filter((v) => !isBind(v));
  const volumes = rowsEditor(
    [["Volume name", (v) => textInput(v)], ["Host path", (v) => textInput(v, { placeholder: "none: scoped to the task" })]],
    "Add volume",
    (base.volumes || []).filter(isBind).map((v) => [v.name, v.host?.sourcePath]),
  );

  function input() {
    const req = {};
    for (const k of REGISTERABLE) if (base[k] !== undefined) req[k] = base[k];
    req.family = familyInput.value.trim();
    req.requiresCompatibilities = [fargate.input.checked && "FARGATE", ec2.input.checked && "EC2"].filter(Boolean);
    if (!req.requiresCompatibilities.length) delete req.requiresCompatibilities;
    const [osFamily, arch] = os.value.split("/");
    req.runtimePlatform = { ...(base.runtimePlatform || {}), operatingSystemFamily: osFamily, cpuArchitecture: arch };
    req.networkMode = networkMode.value;
    const bind = volumes.values().filter(([n]) => n.trim()).map(([n, path]) => (path.trim() ? { name: n.trim(), host: { sourcePath: path.trim() } } : { name: n.trim() }));
    if (bind.length || keptVolumes.length || base.volumes) req.volumes = [...keptVolumes, ...bind];
    if (ephemeral.value.trim()) req.ephemeralStorage = { sizeInGiB: Number(ephemeral.value) };
    else delete req.ephemeralStorage;
    if (cpu.value) req.cpu = cpu.value;
    else delete req.cpu;
    if (memory.value.trim()) req.memory = String(parseMemory(memory.value));
    else delete req.memory;
    for (const [k, el] of [["taskRoleArn", taskRole], ["executionRoleArn", executionRole]]) {
      if (el.value.trim()) req[k] = el.value.trim();
      else delete req[k];
    }
    req.containerDefinitions = containers.map((c) => c.read());
    const t = tags.tags();
    if (t.length) req.tags = t;
    return req;
  }

  const submit = h("button", { type: "submit", class: "primary" }, "Create");
  const form = h(
    "form",
    { class: "form", novalidate: true },
    h(
      "fieldset",
      {},
      h("legend", {}, "Task definition configuration"),
      labelled("Task definition family", familyInput, "Up to 255 letters (uppercase and lowercase), numbers, hyphens and underscores."),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Infrastructure requirements"),
      h("fieldset", { class: "inner" }, h("legend", {}, "Launch type"), fargate, ec2),
      labelled("Operating system/Architecture", os),
      labelled("Network mode", networkMode, "AWS Fargate tasks use awsvpc."),
      h(
        "fieldset",
        { class: "inner" },
        h("legend", {}, "Task size"),
        labelled("CPU", cpu),
        labelled("Memory", memory, memoryHint),
        memoryList,
      ),
      h(
        "fieldset",
        { class: "inner" },
        h("legend", {}, "Task roles"),
        labelled("Task role", taskRole, "The role the task's containers call AWS APIs with."),
        labelled("Task execution role", executionRole, "The role ECS pulls images and writes logs with."),
      ),
    ),
    h("fieldset", {}, h("legend", {}, "Containers"), containerList, h("button", { type: "button", onclick: () => addContainer() }, "Add container")),
    h(
      "fieldset",
      {},
      h("legend", {}, "Storage"),
      labelled("Amount", ephemeral, ephemeralHint),
      h(
        "fieldset",
        { class: "inner" },
        h("legend", {}, "Volumes"),
        keptVolumes.length ? h("p", { class: "hint" }, `Kept as they are: ${keptVolumes.map((v) => v.name).join(", ")}.`) : null,
        volumes,
        h("p", { class: "hint" }, "Bind mounts; containers mount them under Mount points."),
      ),
    ),
    h("fieldset", {}, h("legend", {}, "Tags"), tags),
    h(
      "div",
      { class: "actions" },
      h("a", { class: "button", href: family ? `#/task-definitions/${seg(family)}/${revision}` : "#/task-definitions" }, "Cancel"),
      submit,
    ),
  );
  followLaunchType();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const problem = checkSize() || checkEphemeral();
    if (problem) {
      showError({ type: "ValidationError", message: problem }, "Task definition creation failed");
      return;
    }
    await register(input(), submit);
  });
  return page(title, form);
}

/** One container's part of the form; `.read()` gives its container definition. */
function containerForm(def, n, { region, family, repositories }) {
  const name = textInput(def.name, { required: true });
  const essential = select([["true", "Yes"], ["false", "No"]], def.essential === false ? "false" : "true");
  const image = textInput(def.image, { required: true, class: "mono", placeholder: "repository-url/image:tag" });

  // The picker: this server's ECR repositories, then the chosen one's tags.
  const repo = select([["", "Choose a repository"]], "");
  const tag = select([["", "Choose an image tag"]], "");
  tag.disabled = true;
  const loadRepos = async () => {
    if (repo.options.length > 1) return;
    try {
      const rs = await repositories();
      repo.append(...rs.map((r) => h("option", { value: r.repositoryUri }, r.repositoryName)));
    } catch (e) {
      showError(e, "Could not list the ECR repositories");
    }
  };
  repo.addEventListener("focus", loadRepos);
  repo.addEventListener("pointerdown", loadRepos);
  repo.addEventListener("change", async () => {
    tag.replaceChildren(h("option", { value: "" }, "Choose an image tag"));
    tag.disabled = !repo.value;
    if (!repo.value) return;
    const repositoryName = repo.selectedOptions[0].textContent;
    try {
      const images = await listAll("ecr", "DescribeImages", { repositoryName, maxResults: 100 }, "imageDetails");
      images.sort((a, b) => (b.imagePushedAt || 0) - (a.imagePushedAt || 0));
      const tags = images.flatMap((i) => i.imageTags || []);
      tag.append(...tags.map((t) => h("option", { value: t }, t)));
      if (!tags.length) image.value = repo.value;
    } catch (e) {
      showError(e, `Could not list the images of ${repositoryName}`);
    }
  });
  tag.addEventListener("change", () => {
    if (tag.value) image.value = `${repo.value}:${tag.value}`;
  });
  // Load the repositories now, quietly, so the picker is ready when reached.
  loadRepos();

  const ports = rowsEditor(
    [
      ["Container port", (v) => numberInput(v, { min: "0", max: "65535" })],
      ["Protocol", (v) => select(PROTOCOLS, v || "tcp")],
      ["Port name", (v) => textInput(v)],
      ["App protocol", (v) => select(APP_PROTOCOLS, v || "")],
    ],
    "Add port mapping",
    (def.portMappings || []).map((p) => [p.containerPort, p.protocol, p.name, p.appProtocol]),
  );
  const cpu = numberInput(def.cpu, { min: "0" });
  const hard = numberInput(def.memory, { min: "0" });
  const soft = numberInput(def.memoryReservation, { min: "0" });
  const env = rowsEditor(
    [["Key", (v) => textInput(v)], ["Value", (v) => textInput(v)]],
    "Add environment variable",
    (def.environment || []).map((e) => [e.name, e.value]),
  );
  const entryPoint = textInput((def.entryPoint || []).join(", "));
  const command = textInput((def.command || []).join(", "));
  const workdir = textInput(def.workingDirectory);
  const hc = def.healthCheck || {};
  const hcCommand = textInput((hc.command || []).join(", "), { placeholder: "CMD-SHELL, curl -f http://localhost/ || exit 1" });
  const hcInterval = numberInput(hc.interval, { min: "5", max: "300", placeholder: "30" });
  const hcTimeout = numberInput(hc.timeout, { min: "2", max: "120", placeholder: "5" });
  const hcStart = numberInput(hc.startPeriod, { min: "0", max: "300", placeholder: "0" });
  const hcRetries = numberInput(hc.retries, { min: "1", max: "10", placeholder: "3" });
  const deps = rowsEditor(
    [["Container name", (v) => textInput(v)], ["Condition", (v) => select(CONDITIONS, v || "START")]],
    "Add container dependency",
    (def.dependsOn || []).map((d) => [d.containerName, d.condition]),
  );
  const mounts = rowsEditor(
    [
      ["Source volume", (v) => textInput(v)],
      ["Container path", (v) => textInput(v)],
      ["Read only", (v) => h("input", { type: "checkbox", checked: !!v })],
    ],
    "Add mount point",
    (def.mountPoints || []).map((m) => [m.sourceVolume, m.containerPath, m.readOnly]),
  );
  // Log collection: awslogs to a log group. Another driver a revision had is kept as it was.
  const lc = def.logConfiguration;
  const otherDriver = lc && lc.logDriver !== "awslogs";
  const lo = (lc && lc.logDriver === "awslogs" && lc.options) || {};
  const useLogs = checkbox("Use log collection", !def.name || (!!lc && !otherDriver));
  const logGroup = textInput(lo["awslogs-group"], { placeholder: "/ecs/family" });
  const logRegion = textInput(lo["awslogs-region"] ?? region);
  const logPrefix = textInput(lo["awslogs-stream-prefix"] ?? "ecs");
  const createGroup = checkbox("awslogs-create-group", lo["awslogs-create-group"] === undefined ? !def.name : lo["awslogs-create-group"] === "true");
  const logFields = h(
    "div",
    {},
    labelled("awslogs-group", logGroup, "Amazon CloudWatch log group; empty: /ecs/ and the family."),
    labelled("awslogs-region", logRegion),
    labelled("awslogs-stream-prefix", logPrefix),
    createGroup,
  );
  const followLogs = () => (logFields.hidden = !useLogs.input.checked);
  useLogs.input.addEventListener("change", followLogs);
  followLogs();

  const legend = h("legend", {}, `Container - ${n}`);
  name.addEventListener("input", () => (legend.textContent = `Container - ${n}${name.value ? `: ${name.value}` : ""}`));
  const el = h(
    "fieldset",
    { class: "container" },
    legend,
    h(
      "div",
      { class: "cols" },
      labelled("Name", name),
      labelled("Essential container", essential),
    ),
    labelled("Image URI", image, "An image reference: this server's ECR repositories are listed below."),
    h(
      "div",
      { class: "cols picker" },
      labelled("Private repository", repo),
      labelled("Image tag", tag),
    ),
    h("fieldset", { class: "inner" }, h("legend", {}, "Port mappings"), ports),
    h(
      "fieldset",
      { class: "inner" },
      h("legend", {}, "Resource allocation limits"),
      h("div", { class: "cols" }, labelled("CPU", cpu), labelled("Memory hard limit", hard), labelled("Memory soft limit", soft)),
      h("p", { class: "hint" }, "CPU in units (1024 = 1 vCPU), memory in MiB."),
    ),
    h("fieldset", { class: "inner" }, h("legend", {}, "Environment variables"), env),
    h(
      "fieldset",
      { class: "inner" },
      h("legend", {}, "Docker configuration"),
      labelled("Entry point", entryPoint, "Comma-separated: sh, -c"),
      labelled("Command", command, "Comma-separated: echo, hello"),
      labelled("Working directory", workdir),
    ),
    h(
      "fieldset",
      { class: "inner" },
      h("legend", {}, "HealthCheck"),
      labelled("Command", hcCommand, "Comma-separated, starting with CMD or CMD-SHELL."),
      h(
        "div",
        { class: "cols" },
        labelled("Interval", hcInterval),
        labelled("Timeout", hcTimeout),
        labelled("Start period", hcStart),
        labelled("Retries", hcRetries),
      ),
    ),
    h("fieldset", { class: "inner" }, h("legend", {}, "Startup dependency ordering"), deps),
    h("fieldset", { class: "inner" }, h("legend", {}, "Mount points"), mounts),
    h(
      "fieldset",
      { class: "inner" },
      h("legend", {}, "Log collection"),
      otherDriver ? h("p", { class: "hint" }, `This container logs with ${lc.logDriver}; that is kept unless log collection is turned on.`) : null,
      useLogs,
      logFields,
    ),
    n > 1 ? h("button", { type: "button", class: "danger", onclick: () => result.remove() }, "Remove container") : null,
  );

  const num = (el) => (el.value.trim() === "" ? undefined : Number(el.value));
  function read() {
    const c = { ...def };
    for (const k of MANAGED) delete c[k];
    c.name = name.value.trim();
    c.image = image.value.trim();
    c.essential = essential.value === "true";
    const pm = ports.values().filter(([port]) => port !== "");
    if (pm.length || def.portMappings)
      c.portMappings = pm.map(([port, protocol, pname, app]) => {
        const p = { containerPort: Number(port), protocol };
        if (pname.trim()) p.name = pname.trim();
        else if (app) p.name = `${c.name}-${port}-${protocol}`;
        if (app) p.appProtocol = app;
        return p;
      });
    for (const [k, el] of [["cpu", cpu], ["memory", hard], ["memoryReservation", soft]]) if (num(el) !== undefined) c[k] = num(el);
    const e = env.values().filter(([k]) => k.trim());
    if (e.length) c.environment = e.map(([k, v]) => ({ name: k.trim(), value: v }));
    if (list(entryPoint.value).length) c.entryPoint = list(entryPoint.value);
    if (list(command.value).length) c.command = list(command.value);
    if (workdir.value.trim()) c.workingDirectory = workdir.value.trim();
    if (list(hcCommand.value).length) {
      c.healthCheck = { command: list(hcCommand.value) };
      for (const [k, el] of [["interval", hcInterval], ["timeout", hcTimeout], ["startPeriod", hcStart], ["retries", hcRetries]])
        if (num(el) !== undefined) c.healthCheck[k] = num(el);
    }
    const d = deps.values().filter(([n]) => n.trim());
    if (d.length) c.dependsOn = d.map(([containerName, condition]) => ({ containerName: containerName.trim(), condition }));
    const m = mounts.values().filter(([v]) => v.trim());
    if (m.length || def.mountPoints) c.mountPoints = m.map(([sourceVolume, containerPath, readOnly]) => ({ sourceVolume: sourceVolume.trim(), containerPath: containerPath.trim(), readOnly }));
    if (useLogs.input.checked) {
      c.logConfiguration = {
        logDriver: "awslogs",
        options: {
          "awslogs-group": logGroup.value.trim() || `/ecs/${family()}`,
          "awslogs-region": logRegion.value.trim() || region,
          "awslogs-stream-prefix": logPrefix.value.trim() || "ecs",
          ...(createGroup.input.checked ? { "awslogs-create-group": "true" } : {}),
        },
      };
    } else if (!otherDriver) delete c.logConfiguration;
    return c;
  }
  const result = { el, read };
  return result;
}
