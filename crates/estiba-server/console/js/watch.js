// What the service and task views show of a running workload besides ECS's own state: the
// load balancer's target health (DescribeTargetHealth), the containers' logs (CloudWatch Logs,
// for containers with the awslogs driver) and metrics graphs (CloudWatch GetMetricData, drawn
// as inline SVG by hand: no chart library). Each is a panel that keeps itself up to date while
// it is on screen, through js/api.js only.
//
// Logs are tailed by polling: every LOG_POLL_MS the panel asks FilterLogEvents for events
// from the last event time it has seen (inclusive, since events may share a millisecond, with
// the event ids already shown skipped). StartLiveTail's event stream is not used: a browser
// cannot read AWS's event-stream framing without a decoder, and polling is as live as needed.

import { logs, cloudwatch, elbv2 } from "./api.js";
import { h, table, poll, arnName, status } from "./ui.js";

export const LOG_POLL_MS = 1000;
export const METRIC_POLL_MS = 15000;
const MAX_LINES = 500;

/** The awslogs destinations of a task definition's containers: `{container, group, prefix}`. */
export function logDestinations(taskDef) {
  return (taskDef?.containerDefinitions || [])
    .filter((c) => c.logConfiguration?.logDriver === "awslogs" && c.logConfiguration.options?.["awslogs-group"])
    .map((c) => ({ container: c.name, group: c.logConfiguration.options["awslogs-group"], prefix: c.logConfiguration.options["awslogs-stream-prefix"] }));
}

/** A live log panel. `sources` are `{group, streams?, streamPrefix?}` (the task view names its
 * streams, `<prefix>/<container>/<task id>`; the service view a group's prefix). */
export function logPanel(sources, title = "Logs") {
  const out = h("pre", { class: "log", id: "log-lines", tabindex: "0", "aria-label": `${title} lines` });
  const state = h("p", { class: "hint", role: "status" }, "Loading…");
  const panel = h(
    "div",
    { class: "panel", id: "logs-panel" },
    h("h2", {}, title),
    h("p", { class: "hint" }, `Live tail: asks CloudWatch Logs every ${LOG_POLL_MS / 1000} s for events since the last one shown.`),
    state,
    out,
  );
  if (!sources.length) {
    state.textContent = "No container of this task definition sends its logs to CloudWatch Logs (the awslogs log driver).";
    out.hidden = true;
    return panel;
  }
  const cursors = sources.map(() => ({ since: Date.now() - 3600_000, seen: new Set() }));
  const lines = [];
  const tick = async () => {
    let added = 0;
    for (const [i, src] of sources.entries()) {
      const c = cursors[i];
      const input = { logGroupName: src.group, startTime: c.since, limit: 1000 };
      if (src.streams) input.logStreamNames = src.streams;
      else if (src.streamPrefix) input.logStreamNamePrefix = src.streamPrefix;
      let out;
      try {
        out = await logs("FilterLogEvents", input);
      } catch (e) {
        // A group or stream not created yet (the task has not logged): nothing to show yet.
        if (e.type === "ResourceNotFoundException") continue;
        throw e;
      }
      for (const ev of out.events || []) {
        if (c.seen.has(ev.eventId)) continue;
        c.seen.add(ev.eventId);
        if (ev.timestamp > c.since) c.since = ev.timestamp;
        lines.push(ev);
        added++;
      }
    }
    if (added) {
      lines.sort((a, b) => a.timestamp - b.timestamp);
      lines.splice(0, Math.max(0, lines.length - MAX_LINES));
      const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      out.replaceChildren(
        ...lines.map((ev) => h("span", { class: "log-line" }, h("time", {}, new Date(ev.timestamp).toLocaleTimeString()), ` ${arnName(ev.logStreamName)} `, ev.message, "\n")),
      );
      if (atEnd) out.scrollTop = out.scrollHeight;
    }
    state.textContent = lines.length ? `${lines.length} event(s), updated ${new Date().toLocaleTimeString()}` : `No events yet in ${sources.map((s) => s.group).join(", ")}.`;
  };
  tick().catch((e) => (state.textContent = `Could not read the logs: ${e.type || "Error"}: ${e.message}`));
  poll(panel, LOG_POLL_MS, tick, (e) => (state.textContent = `Could not read the logs: ${e.type || "Error"}: ${e.message}`));
  return panel;
}

/** A line graph of `points` (`[[t ms, value]]`) as inline SVG, with its axes' extremes
 * labelled; `title` names it for screen readers. */
export function lineGraph(title, unit, points, width = 360, height = 140) {
  const ns = "http://www.w3.org/2000/svg";
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const pad = { l: 40, r: 8, t: 8, b: 20 };
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "graph", role: "img", "aria-label": `${title}: ${points.length} datapoint(s)` });
  svg.append(el("title", {}, title));
  const w = width - pad.l - pad.r;
  const hh = height - pad.t - pad.b;
  svg.append(el("rect", { x: pad.l, y: pad.t, width: w, height: hh, class: "graph-area" }));
  if (!points.length) {
    svg.append(el("text", { x: pad.l + w / 2, y: pad.t + hh / 2, "text-anchor": "middle", class: "graph-empty" }, "No data"));
    return svg;
  }
  const ts = points.map((p) => p[0]);
  const t0 = Math.min(...ts);
  const t1 = Math.max(...ts, t0 + 1);
  // The y axis fits the data (a 5 % line is not drawn flat against 100 %), percentages up to 100.
  const most = Math.max(...points.map((p) => p[1]));
  const top = unit === "Percent" ? Math.min(100, Math.max(1, most * 1.25)) : Math.max(1, most * 1.1);
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * w;
  const y = (v) => pad.t + hh - (v / top) * hh;
  const d = points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
  svg.append(el("path", { d, class: "graph-line" }));
  for (const p of points) svg.append(el("circle", { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2, class: "graph-dot" }));
  const fmt = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
  svg.append(el("text", { x: pad.l - 4, y: pad.t + 10, "text-anchor": "end", class: "graph-label" }, fmt(top)));
  svg.append(el("text", { x: pad.l - 4, y: pad.t + hh, "text-anchor": "end", class: "graph-label" }, "0"));
  const clock = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  svg.append(el("text", { x: pad.l, y: height - 4, class: "graph-label" }, clock(t0)));
  svg.append(el("text", { x: pad.l + w, y: height - 4, "text-anchor": "end", class: "graph-label" }, clock(t1)));
  return svg;
}

/** A live metrics panel: one graph per `{id, title, unit, stat, namespace, metric, dimensions}`
 * over the last hour at one-minute periods, from one GetMetricData call. */
export function metricsPanel(graphs, title = "Metrics") {
  const body = h("div", { class: "graphs" });
  const state = h("p", { class: "hint", role: "status" }, "Loading…");
  const panel = h("div", { class: "panel", id: "metrics-panel" }, h("h2", {}, title), state, body);
  const tick = async () => {
    const end = Math.floor(Date.now() / 1000);
    const out = await cloudwatch("GetMetricData", {
      StartTime: end - 3600,
      EndTime: end,
      MetricDataQueries: graphs.map((g) => ({
        Id: g.id,
        MetricStat: {
          Metric: { Namespace: g.namespace, MetricName: g.metric, Dimensions: Object.entries(g.dimensions).map(([Name, Value]) => ({ Name, Value })) },
          Period: 60,
          Stat: g.stat,
        },
        ReturnData: true,
      })),
    });
    const results = Object.fromEntries((out.MetricDataResults || []).map((r) => [r.Id, r]));
    body.replaceChildren(
      ...graphs.map((g) => {
        const r = results[g.id] || {};
        const pts = (r.Timestamps || []).map((t, i) => [t * 1000, r.Values[i]]).sort((a, b) => a[0] - b[0]);
        const last = pts.length ? pts[pts.length - 1][1] : undefined;
        return h(
          "figure",
          { class: "graph-figure", dataset: { metric: g.metric, points: String(pts.length) } },
          lineGraph(g.title, g.unit, pts),
          h("figcaption", {}, `${g.title} (${g.stat}${g.unit === "Percent" ? ", %" : ""})${last === undefined ? "" : `: latest ${last.toFixed(1)}`}`),
        );
      }),
    );
    state.textContent = `Last hour, one-minute periods. Updated ${new Date().toLocaleTimeString()}.`;
  };
  const fail = (e) => (state.textContent = `Could not read the metrics: ${e.type || "Error"}: ${e.message}`);
  tick().catch(fail);
  poll(panel, METRIC_POLL_MS, tick, fail);
  return panel;
}

/** The graphs of an ECS service: CPU and memory utilization, and the ALB's requests when it
 * has a load balancer (`lbDimension` is `app/<name>/<id>`). */
export function serviceGraphs(cluster, service, lbDimension) {
  const dims = { ClusterName: cluster, ServiceName: service };
  const g = [
    { id: "cpu", title: "CPUUtilization", unit: "Percent", stat: "Average", namespace: "AWS/ECS", metric: "CPUUtilization", dimensions: dims },
    { id: "memory", title: "MemoryUtilization", unit: "Percent", stat: "Average", namespace: "AWS/ECS", metric: "MemoryUtilization", dimensions: dims },
  ];
  if (lbDimension)
    g.push({ id: "requests", title: "RequestCount", unit: "Count", stat: "Sum", namespace: "AWS/ApplicationELB", metric: "RequestCount", dimensions: { LoadBalancer: lbDimension } });
  return g;
}

/** A target group's name from its ARN (`...:targetgroup/<name>/<id>`). */
export const targetGroupName = (arn) => (arn || "").split(":targetgroup/")[1]?.split("/")[0] || arn;

/** The `LoadBalancer` dimension of an ALB's ARN (`app/<name>/<id>`). */
export const lbDimension = (arn) => (arn ? arn.split(":loadbalancer/")[1] : undefined);

/** The targets of target groups with their health, as a table. */
export async function targetHealthRows(targetGroupArns) {
  const rows = [];
  for (const arn of targetGroupArns) {
    const out = await elbv2("DescribeTargetHealth", { TargetGroupArn: arn });
    for (const d of Array.isArray(out.TargetHealthDescriptions) ? out.TargetHealthDescriptions : []) {
      const th = d.TargetHealth || {};
      rows.push([targetGroupName(arn), d.Target?.Id || "-", d.Target?.Port || "-", status(th.State), th.Reason || "-", th.Description || "-"]);
    }
  }
  return rows;
}

export const TARGET_HEALTH_COLUMNS = ["Target group", "Target", "Port", "Health status", "Reason", "Description"];

/** The target health table (for the service view's live part). */
export const targetHealthTable = (rows) => table("Target health", TARGET_HEALTH_COLUMNS, rows, "No registered targets.");
