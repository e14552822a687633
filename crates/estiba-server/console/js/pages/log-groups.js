// CloudWatch Logs: the log groups (DescribeLogGroups) and a log group's streams
// (DescribeLogStreams, newest first) with a search of its events: FilterLogEvents with a
// filter pattern (CloudWatch Logs' own syntax: terms, "quoted phrases", -exclusions, JSON
// selectors) over an optional stream name prefix and time range.

import { logs, listAll } from "../api.js";
import { h, table, link, seg, labelled, textInput, select, onSubmit, crumbs, pageHead, panel } from "../ui.js";
import { refreshButton } from "../app.js";

const ms = (t) => (t ? new Date(t).toLocaleString() : "-");
const bytes = (b) => (b === undefined ? "-" : b < 1024 ? `${b} B` : `${(b / 1024).toFixed(1)} KB`);

export async function render({ name, query }) {
  if (name) return group(name, query);
  const groups = await listAll("logs", "DescribeLogGroups", {}, "logGroups");
  return h(
    "section",
    {},
    pageHead("Log groups", groups.length, refreshButton()),
    table(
      "Log groups",
      ["Log group", "Log class", "Retention", "Stored bytes", "Creation time"],
      groups.map((g) => [
        link(`/log-groups/${seg(g.logGroupName)}`, g.logGroupName),
        g.logGroupClass || "STANDARD",
        g.retentionInDays ? `${g.retentionInDays} days` : "Never expire",
        bytes(g.storedBytes),
        ms(g.creationTime),
      ]),
      "No log groups.",
    ),
  );
}

const RANGES = [
  ["300000", "Last 5 minutes"],
  ["3600000", "Last hour"],
  ["86400000", "Last day"],
  ["", "All time"],
];

async function group(name, query) {
  const g = (await logs("DescribeLogGroups", { logGroupNamePrefix: name })).logGroups.find((x) => x.logGroupName === name);
  if (!g) throw { type: "ResourceNotFoundException", message: `The specified log group does not exist: ${name}` };
  const streams = (await logs("DescribeLogStreams", { logGroupName: name, orderBy: "LastEventTime", descending: true, limit: 50 })).logStreams || [];

  const pattern = textInput(query.get("filter") || "", { placeholder: "Filter events" });
  const prefix = textInput("");
  const range = select(RANGES, "3600000");
  const results = h("div", { id: "search-results" });
  const submit = h("button", { type: "submit", class: "primary" }, "Search");
  const form = h(
    "form",
    { class: "form search", role: "search", "aria-label": "Search log events" },
    h(
      "fieldset",
      {},
      h("legend", {}, "Search log group"),
      labelled("Filter pattern", pattern, 'Terms, "exact phrases", -excluded terms or JSON selectors such as { $.level = "error" }.'),
      h("div", { class: "cols" }, labelled("Log stream name prefix", prefix), labelled("Time range", range)),
      h("div", { class: "actions" }, submit),
    ),
  );
  const search = async () => {
    const input = { logGroupName: name, limit: 200 };
    if (pattern.value.trim()) input.filterPattern = pattern.value.trim();
    if (prefix.value.trim()) input.logStreamNamePrefix = prefix.value.trim();
    if (range.value) input.startTime = Date.now() - Number(range.value);
    const out = await logs("FilterLogEvents", input);
    const events = out.events || [];
    results.replaceChildren(
      table(
        "Log events",
        ["Timestamp", "Log stream", "Message"],
        events.map((e) => [ms(e.timestamp), e.logStreamName, h("span", { class: "mono log-message" }, e.message)]),
        "No events match.",
      ),
    );
  };
  onSubmit(form, submit, { run: search, failTitle: "The search failed" });
  await search();

  return h(
    "section",
    {},
    crumbs([["/log-groups", "Log groups"]], name),
    pageHead(name, undefined, refreshButton()),
    panel("Log group details", [
      ["ARN", g.arn],
      ["Retention", g.retentionInDays ? `${g.retentionInDays} days` : "Never expire"],
      ["Stored bytes", bytes(g.storedBytes)],
      ["Metric filters", String(g.metricFilterCount ?? 0)],
      ["Creation time", ms(g.creationTime)],
    ]),
    form,
    results,
    table(
      "Log streams",
      ["Log stream", "First event time", "Last event time"],
      streams.map((s) => [s.logStreamName, ms(s.firstEventTimestamp), ms(s.lastEventTimestamp)]),
      "No log streams.",
    ),
  );
}
