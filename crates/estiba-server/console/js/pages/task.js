// A task: its overview (status, task definition, compute, timings, stop code and reason), its
// network (the ENI's addresses) and its containers (status, exit code, reason, health, network
// bindings), kept live by asking DescribeTasks again every 750 ms (service.js POLL_MS) while the page is open and
// the task not yet STOPPED; its containers' logs (the awslogs streams
// `<prefix>/<container>/<task id>`, tailed live by js/watch.js); and Stop (StopTask).

import { ecs } from "../api.js";
import { h, table, link, seg, status, arnName, time, showError, showSuccess, confirmDialog, actionButton, poll, crumbs, panel } from "../ui.js";
import { refresh } from "../app.js";
import { POLL_MS } from "./service.js";
import { logDestinations, logPanel } from "../watch.js";

async function load(cluster, id) {
  const out = await ecs("DescribeTasks", { cluster, tasks: [id], include: ["TAGS"] });
  const t = (out.tasks || [])[0];
  if (!t) {
    const f = (out.failures || [])[0];
    throw { type: "InvalidParameterException", message: `Task ${id} ${f ? `: ${f.reason}` : "was not found"}.` };
  }
  return t;
}

const detail = (attachment, name) => (attachment?.details || []).find((d) => d.name === name)?.value;

function live(t) {
  const [family, revision] = arnName(t.taskDefinitionArn).split(":");
  const eni = (t.attachments || []).find((a) => a.type === "ElasticNetworkInterface");
  return h(
    "div",
    {},
    panel("Task overview", [
      ["ARN", t.taskArn],
      ["Last status", status(t.lastStatus)],
      ["Desired status", t.desiredStatus],
      ["Health status", t.healthStatus],
      ["Task definition", link(`/task-definitions/${seg(family)}/${seg(revision)}`, `${family}:${revision}`)],
      ["Group", t.group],
      ["Launch type", t.launchType],
      ["Capacity provider", t.capacityProviderName],
      ["Created at", time(t.createdAt)],
      ["Started at", time(t.startedAt)],
      ["Stopped at", time(t.stoppedAt)],
      ["Stop code", t.stopCode],
      ["Stopped reason", t.stoppedReason],
      ["Tags", (t.tags || []).map((x) => `${x.key}=${x.value}`).join(", ")],
    ]),
    panel("Network", [
      ["Network mode", eni ? "awsvpc" : "-"],
      ["ENI ID", detail(eni, "networkInterfaceId")],
      ["Subnet ID", detail(eni, "subnetId")],
      ["Private IP", detail(eni, "privateIPv4Address")],
      ["MAC address", detail(eni, "macAddress")],
    ]),
    table(
      "Containers",
      ["Container name", "Image", "Last status", "Exit code", "Reason", "Health status", "Network bindings"],
      (t.containers || []).map((c) => [
        c.name,
        h("span", { class: "mono" }, c.image || "-"),
        status(c.lastStatus),
        c.exitCode === undefined || c.exitCode === null ? "-" : String(c.exitCode),
        c.reason || "-",
        c.healthStatus || "-",
        (c.networkBindings || []).map((b) => `${b.bindIP || ""}:${b.hostPort} → ${b.containerPort}/${b.protocol || "tcp"}`).join(", ") || "-",
      ]),
      "No containers.",
    ),
  );
}

export async function render({ cluster, task }) {
  let t = await load(cluster, task);
  const id = arnName(t.taskArn);
  let taskDef = null;
  try {
    taskDef = (await ecs("DescribeTaskDefinition", { taskDefinition: t.taskDefinitionArn })).taskDefinition;
  } catch {
    // A deleted revision: no log configuration to follow.
  }
  // The task's own streams; without a prefix the awslogs stream is the container's runtime id.
  const runtimeId = (name) => (t.containers || []).find((c) => c.name === name)?.runtimeId || id;
  const logs = logPanel(
    logDestinations(taskDef).map((d) => ({ group: d.group, streams: [d.prefix ? `${d.prefix}/${d.container}/${id}` : runtimeId(d.container)] })),
  );
  const body = h("div", { id: "task-live" }, live(t));
  const stop = actionButton(
    "Stop",
    async () => {
      const ok = await confirmDialog({ title: `Stop task ${id}?`, text: "The task's containers are sent SIGTERM, then SIGKILL after their stop timeout.", word: "stop", action: "Stop" });
      if (!ok) return;
      try {
        await ecs("StopTask", { cluster, task: t.taskArn, reason: "Stopped from the console" });
        showSuccess(`Task ${id} is stopping.`, true);
        refresh();
      } catch (e) {
        showError(e, `Could not stop task ${id}`);
      }
    },
    { class: "danger" },
  );
  stop.hidden = t.desiredStatus === "STOPPED";
  const section = h(
    "section",
    {},
    crumbs([["/clusters", "Clusters"], [`/clusters/${seg(cluster)}/tasks`, cluster]], id),
    h("div", { class: "page-head" }, h("h1", {}, `Task ${id}`), h("div", { class: "actions" }, stop)),
    body,
    logs,
  );
  // Live until the task has stopped (a stopped task changes no more).
  let last = JSON.stringify(t);
  poll(section, POLL_MS, async () => {
    if (t.lastStatus === "STOPPED") return false;
    t = await load(cluster, task);
    const now = JSON.stringify(t);
    if (section.isConnected && now !== last) {
      last = now;
      body.replaceChildren(live(t));
      stop.hidden = t.desiredStatus === "STOPPED";
    }
  });
  return section;
}
