// CloudWatch alarms: the metric alarms (DescribeAlarms) with their state and its reason, and
// an alarm's details and history (DescribeAlarmHistory).

import { cloudwatch } from "../api.js";
import { h, table, link, seg, status, crumbs, pageHead, panel } from "../ui.js";
import { refreshButton } from "../app.js";

const time = (t) => (t ? new Date(typeof t === "number" ? t * 1000 : t).toLocaleString() : "-");
const dims = (a) => (a.Dimensions || []).map((d) => `${d.Name}=${d.Value}`).join(", ");
const condition = (a) => `${a.MetricName} ${a.ComparisonOperator} ${a.Threshold} for ${a.EvaluationPeriods} datapoint(s) of ${a.Period} s (${a.Statistic || a.ExtendedStatistic || ""})`;

async function allAlarms(input = {}) {
  const out = [];
  let NextToken;
  do {
    const page = await cloudwatch("DescribeAlarms", NextToken ? { ...input, NextToken } : input);
    out.push(...(page.MetricAlarms || []));
    NextToken = page.NextToken;
  } while (NextToken);
  return out;
}

export async function render({ name }) {
  if (name) return alarm(name);
  const alarms = await allAlarms();
  return h(
    "section",
    {},
    pageHead("Alarms", alarms.length, refreshButton()),
    table(
      "Alarms",
      ["Name", "State", "Last state update", "Conditions", "State reason"],
      alarms.map((a) => [link(`/alarms/${seg(a.AlarmName)}`, a.AlarmName), status(a.StateValue), time(a.StateUpdatedTimestamp), condition(a), a.StateReason || "-"]),
      "No alarms.",
    ),
  );
}

async function alarm(name) {
  const a = (await allAlarms({ AlarmNames: [name] }))[0];
  if (!a) throw { type: "ResourceNotFound", message: `Alarm ${name} does not exist.` };
  const history = (await cloudwatch("DescribeAlarmHistory", { AlarmName: name, MaxRecords: 50 })).AlarmHistoryItems || [];
  return h(
    "section",
    {},
    crumbs([["/alarms", "Alarms"]], name),
    pageHead(name, undefined, refreshButton()),
    panel("Details", [
      ["ARN", a.AlarmArn],
      ["State", status(a.StateValue)],
      ["State reason", a.StateReason],
      ["Namespace", a.Namespace],
      ["Metric name", a.MetricName],
      ["Dimensions", dims(a)],
      ["Conditions", condition(a)],
      ["Actions", (a.AlarmActions || []).join(", ")],
      ["Actions enabled", String(a.ActionsEnabled)],
    ]),
    table("History", ["Date", "Type", "Description"], history.map((i) => [time(i.Timestamp), i.HistoryItemType, i.HistorySummary]), "No history."),
  );
}
