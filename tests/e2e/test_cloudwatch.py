"""CloudWatch metrics and alarms against a server whose AWS minute lasts 5 seconds
(`--metric-period 5s`): PutMetricData then GetMetricStatistics / GetMetricData in each of the
three protocols boto3 can speak, the AWS CLI, percentiles, ListMetrics filters and paging,
metric math, AWS's validation errors; alarms going INSUFFICIENT_DATA -> ALARM -> OK as data
arrives, TreatMissingData, SetAlarmState, history, actions, DeleteAlarms and tags."""

import json
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from conftest import Estiba, error_code, error_message, unique, wait_until
from test_front import client_speaking

PERIOD = 5  # real seconds per AWS minute


@pytest.fixture(scope="module")
def cwserver():
    d = tempfile.mkdtemp(prefix="estiba-cw-")
    e = Estiba(d, extra_args=["--metric-period", f"{PERIOD}s"]).start()
    yield e
    e.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cw(cwserver):
    return cwserver.client("cloudwatch")


def now():
    return datetime.now(timezone.utc)


def window():
    """A query range around now: 12 AWS minutes back, a few ahead."""
    return now() - timedelta(seconds=12 * PERIOD), now() + timedelta(seconds=3 * PERIOD)


# Metrics in every protocol.


@pytest.mark.parametrize("protocol", ["json", "smithy-rpc-v2-cbor", "query"])
def test_put_then_get_round_trip_in_every_protocol(cwserver, tmp_path, protocol):
    c = client_speaking(cwserver, tmp_path, "cloudwatch", protocol)
    ns = unique("E2E/rt")
    dims = [{"Name": "Service", "Value": "web"}]
    c.put_metric_data(
        Namespace=ns,
        MetricData=[
            {"MetricName": "Latency", "Dimensions": dims, "Value": 10.0, "Unit": "Milliseconds"},
            {"MetricName": "Latency", "Dimensions": dims, "Values": [20.0, 30.0], "Counts": [1.0, 2.0], "Unit": "Milliseconds"},
            {
                "MetricName": "Latency",
                "Dimensions": dims,
                "StatisticValues": {"SampleCount": 2, "Sum": 100.0, "Minimum": 40.0, "Maximum": 60.0},
                "Unit": "Milliseconds",
            },
        ],
    )
    start, end = window()
    out = c.get_metric_statistics(
        Namespace=ns,
        MetricName="Latency",
        Dimensions=dims,
        StartTime=start,
        EndTime=end,
        Period=60,
        Statistics=["SampleCount", "Sum", "Minimum", "Maximum", "Average"],
    )
    assert out["Label"] == "Latency"
    [p] = out["Datapoints"]
    assert p["SampleCount"] == 6 and p["Sum"] == 190 and p["Minimum"] == 10 and p["Maximum"] == 60
    assert abs(p["Average"] - 190 / 6) < 1e-9
    assert p["Unit"] == "Milliseconds"
    # The datapoint's time is real time, within the range asked.
    assert start <= p["Timestamp"] <= end
    # Another unit: nothing (CloudWatch never converts units).
    none = c.get_metric_statistics(
        Namespace=ns, MetricName="Latency", Dimensions=dims, StartTime=start, EndTime=end, Period=60, Statistics=["Sum"], Unit="Seconds"
    )
    assert none["Datapoints"] == []

    r = c.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "m1",
                "MetricStat": {"Metric": {"Namespace": ns, "MetricName": "Latency", "Dimensions": dims}, "Period": 60, "Stat": "Maximum"},
            }
        ],
        StartTime=start,
        EndTime=end,
    )
    [res] = r["MetricDataResults"]
    assert res["Id"] == "m1" and res["Label"] == "Latency" and res["StatusCode"] == "Complete"
    assert res["Values"] == [60.0]
    assert start <= res["Timestamps"][0] <= end

    listed = c.list_metrics(Namespace=ns)["Metrics"]
    assert listed == [{"Namespace": ns, "MetricName": "Latency", "Dimensions": dims}]


def test_the_aws_cli_puts_and_reads(cwserver):
    ns = unique("E2E/cli")
    # One timestamp for both: each CLI call takes about a second, and with `--metric-period 5s`
    # two calls may otherwise fall in two AWS minutes.
    ts = datetime.now(timezone.utc).isoformat()
    for v in ("7", "3"):
        cwserver.aws("cloudwatch", "put-metric-data", "--namespace", ns, "--metric-name", "Hits", "--value", v,
                     "--unit", "Count", "--timestamp", ts)
    start, end = window()
    out = cwserver.aws(
        "cloudwatch", "get-metric-statistics", "--namespace", ns, "--metric-name", "Hits",
        "--start-time", start.isoformat(), "--end-time", end.isoformat(), "--period", "60", "--statistics", "Sum", "SampleCount",
    )
    assert [(p["Sum"], p["SampleCount"]) for p in out["Datapoints"]] == [(10.0, 2.0)]
    listed = cwserver.aws("cloudwatch", "list-metrics", "--namespace", ns)["Metrics"]
    assert [m["MetricName"] for m in listed] == ["Hits"]
    p = cwserver.aws("cloudwatch", "put-metric-data", "--namespace", "AWS/ECS", "--metric-name", "X", "--value", "1", check=False)
    assert p.returncode != 0 and "InvalidParameterValue" in p.stderr, p.stderr


def test_percentiles(cw):
    ns = unique("E2E/pct")
    cw.put_metric_data(Namespace=ns, MetricData=[{"MetricName": "Lat", "Values": [float(v) for v in range(1, 101)]}])
    start, end = window()
    [p] = cw.get_metric_statistics(
        Namespace=ns, MetricName="Lat", StartTime=start, EndTime=end, Period=60, ExtendedStatistics=["p50", "p99", "p99.9"]
    )["Datapoints"]
    ext = p["ExtendedStatistics"]
    assert set(ext) == {"p50", "p99", "p99.9"}
    assert abs(ext["p50"] - 50) <= 1.5 and abs(ext["p99"] - 99) <= 2.5, ext
    assert "Sum" not in p
    r = cw.get_metric_data(
        MetricDataQueries=[{"Id": "q", "MetricStat": {"Metric": {"Namespace": ns, "MetricName": "Lat"}, "Period": 60, "Stat": "p90"}}],
        StartTime=start,
        EndTime=end,
    )
    [v] = r["MetricDataResults"][0]["Values"]
    assert abs(v - 90) <= 2.5


def test_list_metrics_filters_and_paging(cw):
    ns = unique("E2E/list")
    data = [{"MetricName": f"M{i:03}", "Value": 1.0} for i in range(505)]
    # One call: past 10 KB boto3 sends it gzip-compressed (Content-Encoding: gzip).
    cw.put_metric_data(Namespace=ns, MetricData=data)
    cw.put_metric_data(
        Namespace=ns,
        MetricData=[
            {"MetricName": "Req", "Dimensions": [{"Name": "Service", "Value": "a"}], "Value": 1.0},
            {"MetricName": "Req", "Dimensions": [{"Name": "Service", "Value": "b"}, {"Name": "Zone", "Value": "z1"}], "Value": 1.0},
        ],
    )
    first = cw.list_metrics(Namespace=ns)
    assert len(first["Metrics"]) == 500 and first["NextToken"]
    second = cw.list_metrics(Namespace=ns, NextToken=first["NextToken"])
    assert len(second["Metrics"]) == 7 and "NextToken" not in second
    names = [m["MetricName"] for m in first["Metrics"] + second["Metrics"]]
    assert len(set(map(lambda m: json.dumps(m, sort_keys=True), first["Metrics"] + second["Metrics"]))) == 507
    assert names.count("Req") == 2
    assert len(cw.list_metrics(Namespace=ns, MetricName="Req")["Metrics"]) == 2
    only_b = cw.list_metrics(Namespace=ns, Dimensions=[{"Name": "Service", "Value": "b"}])["Metrics"]
    assert [m["Dimensions"] for m in only_b] == [[{"Name": "Service", "Value": "b"}, {"Name": "Zone", "Value": "z1"}]]
    zone = cw.list_metrics(Namespace=ns, Dimensions=[{"Name": "Zone"}])["Metrics"]
    assert len(zone) == 1
    assert len(cw.list_metrics(Namespace=ns, MetricName="Req", RecentlyActive="PT3H")["Metrics"]) == 2
    with pytest.raises(ClientError) as e:
        cw.list_metrics(Namespace=ns, NextToken="not-a-token")
    assert error_code(e) == "InvalidNextToken"


def test_metric_math(cw):
    ns = unique("E2E/math")
    cw.put_metric_data(Namespace=ns, MetricData=[{"MetricName": "Errors", "Value": 5.0}, {"MetricName": "Requests", "Value": 20.0}])
    start, end = window()

    def stat(i, name):
        return {"Id": i, "MetricStat": {"Metric": {"Namespace": ns, "MetricName": name}, "Period": 60, "Stat": "Sum"}, "ReturnData": False}

    r = cw.get_metric_data(
        MetricDataQueries=[
            stat("m1", "Errors"),
            stat("m2", "Requests"),
            {"Id": "rate", "Expression": "m1/m2*100", "Label": "Error rate"},
            {"Id": "total", "Expression": "SUM(METRICS())"},
            {"Id": "mx", "Expression": "(MAX([m1, m2]) - 2) / 2"},
        ],
        StartTime=start,
        EndTime=end,
        ScanBy="TimestampAscending",
    )
    by_id = {x["Id"]: x for x in r["MetricDataResults"]}
    assert set(by_id) == {"rate", "total", "mx"}, "ReturnData false is not answered"
    assert by_id["rate"]["Values"] == [25.0] and by_id["rate"]["Label"] == "Error rate"
    assert by_id["total"]["Values"] == [25.0]
    assert by_id["mx"]["Values"] == [9.0]
    with pytest.raises(ClientError) as e:
        cw.get_metric_data(MetricDataQueries=[stat("m1", "Errors"), {"Id": "e1", "Expression": "m1 + m9"}], StartTime=start, EndTime=end)
    assert error_code(e) == "ValidationError" and "Unrecognized identifier m9" in error_message(e)


def test_get_metric_data_paging_and_order(cw):
    ns = unique("E2E/page")
    # Three AWS minutes of data: now, one and two minutes back.
    t = now()
    cw.put_metric_data(
        Namespace=ns,
        MetricData=[{"MetricName": "V", "Value": float(i), "Timestamp": t - timedelta(seconds=i * PERIOD)} for i in range(3)],
    )
    start, end = window()
    q = [{"Id": "v", "MetricStat": {"Metric": {"Namespace": ns, "MetricName": "V"}, "Period": 60, "Stat": "Maximum"}}]
    full = cw.get_metric_data(MetricDataQueries=q, StartTime=start, EndTime=end)["MetricDataResults"][0]
    assert full["Values"] == [0.0, 1.0, 2.0], "newest first by default"
    assert full["Timestamps"] == sorted(full["Timestamps"], reverse=True)
    p1 = cw.get_metric_data(MetricDataQueries=q, StartTime=start, EndTime=end, MaxDatapoints=2)
    assert p1["MetricDataResults"][0]["Values"] == [0.0, 1.0] and p1["MetricDataResults"][0]["StatusCode"] == "PartialData"
    p2 = cw.get_metric_data(MetricDataQueries=q, StartTime=start, EndTime=end, MaxDatapoints=2, NextToken=p1["NextToken"])
    assert p2["MetricDataResults"][0]["Values"] == [2.0] and "NextToken" not in p2


@pytest.mark.parametrize(
    "datum,code,text",
    [
        ({"MetricName": "X", "Value": 1.0, "StatisticValues": {"SampleCount": 1, "Sum": 1, "Minimum": 1, "Maximum": 1}},
         "InvalidParameterCombination", "MetricData.member.1.Value and MetricData.member.1.StatisticValues"),
        ({"MetricName": "X", "Values": [1.0, 2.0], "Counts": [1.0]}, "InvalidParameterValue", "must be of the same size"),
        ({"MetricName": "X", "Value": 1.0, "StorageResolution": 5}, "InvalidParameterValue", "StorageResolution"),
        ({"MetricName": "X", "Value": 1.0, "Timestamp": datetime(2020, 1, 1, tzinfo=timezone.utc)}, "InvalidParameterValue", "within the past two weeks"),
        ({"MetricName": "X", "Value": 1.0, "Timestamp": datetime.now(timezone.utc) + timedelta(hours=3)}, "InvalidParameterValue", "two hours in the future"),
        ({"MetricName": "X", "Value": 1e200}, "InvalidParameterValue", "2^360"),
        ({"MetricName": "X"}, "MissingParameter", "MetricData.member.1.Value"),
        ({"MetricName": "X", "Value": 1.0, "Dimensions": [{"Name": f"d{i}", "Value": "v"} for i in range(31)]}, "InvalidParameterValue", "30"),
    ],
)
def test_put_metric_data_validation(cw, datum, code, text):
    ns = unique("E2E/bad")
    with pytest.raises(ClientError) as e:
        cw.put_metric_data(Namespace=ns, MetricData=[datum])
    assert error_code(e) == code, e.value.response
    assert text in error_message(e)
    assert cw.list_metrics(Namespace=ns)["Metrics"] == [], "nothing is written"


def test_reserved_namespace_and_query_validation(cw):
    with pytest.raises(ClientError) as e:
        cw.put_metric_data(Namespace="AWS/ECS", MetricData=[{"MetricName": "CPUUtilization", "Value": 1.0}])
    assert error_code(e) == "InvalidParameterValue" and "AWS/" in error_message(e)
    t = now()
    with pytest.raises(ClientError) as e:
        cw.get_metric_statistics(Namespace="N", MetricName="M", StartTime=t - timedelta(days=30), EndTime=t, Period=60, Statistics=["Sum"])
    assert error_code(e) == "InvalidParameterCombination"
    assert "exceeds the limit of 1,440" in error_message(e)
    with pytest.raises(ClientError) as e:
        cw.get_metric_statistics(Namespace="N", MetricName="M", StartTime=t - timedelta(minutes=5), EndTime=t, Period=45, Statistics=["Sum"])
    assert error_code(e) == "InvalidParameterValue" and "Period" in error_message(e)
    with pytest.raises(ClientError) as e:
        cw.get_metric_statistics(Namespace="N", MetricName="M", StartTime=t, EndTime=t - timedelta(minutes=5), Period=60, Statistics=["Sum"])
    assert "StartTime must be less than" in error_message(e)
    with pytest.raises(ClientError) as e:
        cw.get_metric_statistics(
            Namespace="N", MetricName="M", StartTime=t - timedelta(minutes=5), EndTime=t, Period=60, Statistics=["Sum"], ExtendedStatistics=["p99"]
        )
    assert error_code(e) == "InvalidParameterCombination"
    with pytest.raises(ClientError) as e:
        cw.get_metric_statistics(Namespace="N", MetricName="M", StartTime=t - timedelta(minutes=5), EndTime=t, Period=60)
    assert error_code(e) == "MissingParameter"


# Alarms.


def alarm(cw, name, ns, **kw):
    args = dict(
        AlarmName=name,
        Namespace=ns,
        MetricName="Load",
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=50.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    args.update(kw)
    cw.put_metric_alarm(**args)


def state(cw, name):
    [a] = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    return a


def wait_state(cw, name, value, timeout=6 * PERIOD):
    return wait_until(lambda: (a := state(cw, name))["StateValue"] == value and a, timeout=timeout, interval=0.2, what=f"{name} in {value}")


def test_alarm_follows_its_metric(cw):
    ns, name = unique("E2E/alarm"), unique("load-high")
    alarm(cw, name, ns)
    a = state(cw, name)
    assert a["StateValue"] == "INSUFFICIENT_DATA" and a["StateReason"] == "Unchecked: Initial alarm creation"
    assert a["Period"] == 60 and a["AlarmArn"].endswith(f":alarm:{name}") and a["ActionsEnabled"] is True
    cw.put_metric_data(Namespace=ns, MetricData=[{"MetricName": "Load", "Value": 80.0}])
    a = wait_state(cw, name, "ALARM")
    assert a["StateReason"].startswith("Threshold Crossed: 1 datapoint [80.0 ("), a["StateReason"]
    data = json.loads(a["StateReasonData"])
    assert data["period"] == 60 and data["statistic"] == "Maximum" and data["recentDatapoints"] == [80.0]
    # Later minutes below the threshold: OK.
    time.sleep(PERIOD)
    cw.put_metric_data(Namespace=ns, MetricData=[{"MetricName": "Load", "Value": 10.0}])
    a = wait_state(cw, name, "OK")
    assert "was not greater than the threshold (50.0)" in a["StateReason"]
    # History, newest first: OK then ALARM, then the creation.
    items = cw.describe_alarm_history(AlarmName=name)["AlarmHistoryItems"]
    summaries = [i["HistorySummary"] for i in items]
    assert summaries[:2] == ["Alarm updated from ALARM to OK", "Alarm updated from INSUFFICIENT_DATA to ALARM"], summaries
    assert summaries[-1] == f'Alarm "{name}" created'
    upd = json.loads(items[0]["HistoryData"])
    assert upd["oldState"]["stateValue"] == "ALARM" and upd["newState"]["stateValue"] == "OK"
    # Paging, newest first, then oldest first.
    p1 = cw.describe_alarm_history(AlarmName=name, MaxRecords=2)
    p2 = cw.describe_alarm_history(AlarmName=name, MaxRecords=2, NextToken=p1["NextToken"])
    assert [i["HistorySummary"] for i in p1["AlarmHistoryItems"] + p2["AlarmHistoryItems"]] == summaries
    asc = cw.describe_alarm_history(AlarmName=name, ScanBy="TimestampAscending")["AlarmHistoryItems"]
    assert [i["HistorySummary"] for i in asc] == summaries[::-1]
    only_config = cw.describe_alarm_history(AlarmName=name, HistoryItemType="ConfigurationUpdate")["AlarmHistoryItems"]
    assert [i["HistoryItemType"] for i in only_config] == ["ConfigurationUpdate"]
    # DescribeAlarms filters, DescribeAlarmsForMetric.
    assert [x["AlarmName"] for x in cw.describe_alarms(AlarmNamePrefix=name[:12], StateValue="OK")["MetricAlarms"]] == [name]
    assert cw.describe_alarms(AlarmNames=[name], StateValue="ALARM")["MetricAlarms"] == []
    assert [x["AlarmName"] for x in cw.describe_alarms_for_metric(Namespace=ns, MetricName="Load")["MetricAlarms"]] == [name]
    assert cw.describe_alarms(AlarmNames=[name], AlarmTypes=["CompositeAlarm"])["MetricAlarms"] == []


@pytest.mark.parametrize("treat,expected", [("breaching", "ALARM"), ("notBreaching", "OK")])
def test_treat_missing_data(cw, treat, expected):
    name = unique(f"missing-{treat}")
    alarm(cw, name, unique("E2E/none"), TreatMissingData=treat, EvaluationPeriods=2)
    a = wait_state(cw, name, expected)
    assert "no datapoints were received for 2 periods" in a["StateReason"], a["StateReason"]
    assert a["TreatMissingData"] == treat


def test_set_alarm_state_lasts_until_the_next_evaluation(cw):
    name = unique("manual")
    alarm(cw, name, unique("E2E/manual"), TreatMissingData="notBreaching")
    wait_state(cw, name, "OK")
    cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="testing", StateReasonData='{"why": "test"}')
    a = state(cw, name)
    assert a["StateValue"] == "ALARM" and a["StateReason"] == "testing" and json.loads(a["StateReasonData"]) == {"why": "test"}
    wait_state(cw, name, "OK")
    summaries = [i["HistorySummary"] for i in cw.describe_alarm_history(AlarmName=name, HistoryItemType="StateUpdate")["AlarmHistoryItems"]]
    assert summaries[:2] == ["Alarm updated from ALARM to OK", "Alarm updated from OK to ALARM"], summaries
    with pytest.raises(ClientError) as e:
        cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="x", StateReasonData="not json")
    assert error_code(e) == "InvalidFormat"
    with pytest.raises(ClientError) as e:
        cw.set_alarm_state(AlarmName=unique("nope"), StateValue="ALARM", StateReason="x")
    assert error_code(e) == "ResourceNotFound"


def test_sns_actions_fail_without_sns_and_disabled_actions_do_not_run(cw):
    topic = "arn:aws:sns:us-east-1:000000000000:ops"
    name = unique("notify")
    alarm(cw, name, unique("E2E/sns"), TreatMissingData="breaching", AlarmActions=[topic])
    wait_state(cw, name, "ALARM")
    actions = wait_until(
        lambda: cw.describe_alarm_history(AlarmName=name, HistoryItemType="Action")["AlarmHistoryItems"], timeout=5, what="action item"
    )
    assert actions[0]["HistorySummary"] == f"Failed to execute action {topic}"
    assert [a["AlarmName"] for a in cw.describe_alarms(ActionPrefix="arn:aws:sns:us-east-1:000000000000:")["MetricAlarms"]].count(name) == 1

    quiet = unique("quiet")
    alarm(cw, quiet, unique("E2E/sns"), TreatMissingData="breaching", AlarmActions=[topic], ActionsEnabled=False)
    wait_state(cw, quiet, "ALARM")
    time.sleep(1)
    assert cw.describe_alarm_history(AlarmName=quiet, HistoryItemType="Action")["AlarmHistoryItems"] == []
    cw.enable_alarm_actions(AlarmNames=[quiet])
    assert state(cw, quiet)["ActionsEnabled"] is True
    cw.disable_alarm_actions(AlarmNames=[quiet])
    assert state(cw, quiet)["ActionsEnabled"] is False


def test_replacing_keeps_state_and_delete_is_all_or_nothing(cw):
    ns, name = unique("E2E/repl"), unique("repl")
    alarm(cw, name, ns, TreatMissingData="breaching", Tags=[{"Key": "team", "Value": "a"}])
    wait_state(cw, name, "ALARM")
    alarm(cw, name, ns, TreatMissingData="breaching", Threshold=70.0, AlarmDescription="higher")
    a = state(cw, name)
    assert a["StateValue"] == "ALARM" and a["Threshold"] == 70.0 and a["AlarmDescription"] == "higher"
    summaries = [i["HistorySummary"] for i in cw.describe_alarm_history(AlarmName=name, HistoryItemType="ConfigurationUpdate")["AlarmHistoryItems"]]
    assert summaries == [f'Alarm "{name}" updated', f'Alarm "{name}" created']
    with pytest.raises(ClientError) as e:
        cw.delete_alarms(AlarmNames=[name, unique("ghost")])
    assert error_code(e) == "ResourceNotFound"
    assert state(cw, name)["AlarmName"] == name, "nothing was deleted"
    cw.delete_alarms(AlarmNames=[name])
    assert cw.describe_alarms(AlarmNames=[name])["MetricAlarms"] == []
    items = cw.describe_alarm_history(AlarmName=name, HistoryItemType="ConfigurationUpdate")["AlarmHistoryItems"]
    assert items[0]["HistorySummary"] == f'Alarm "{name}" deleted'


def test_alarm_tags(cw):
    name = unique("tagged")
    alarm(cw, name, unique("E2E/tags"), Tags=[{"Key": "team", "Value": "a"}])
    arn = state(cw, name)["AlarmArn"]
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "team", "Value": "a"}]
    cw.tag_resource(ResourceARN=arn, Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "b"}])
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "b"}]
    cw.untag_resource(ResourceARN=arn, TagKeys=["team"])
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "env", "Value": "prod"}]
    with pytest.raises(ClientError) as e:
        cw.list_tags_for_resource(ResourceARN=arn + "-missing")
    assert error_code(e) == "ResourceNotFoundException"


def test_put_metric_alarm_validation(cw):
    with pytest.raises(ClientError) as e:
        alarm(cw, unique("bad"), "E2E/x", Period=45)
    assert error_code(e) == "ValidationError" and "Period must be 10, 20, 30 or a multiple of 60" in error_message(e)
    with pytest.raises(ClientError) as e:
        alarm(cw, unique("bad"), "E2E/x", ExtendedStatistic="p99")
    assert error_code(e) == "InvalidParameterCombination"
    with pytest.raises(ClientError) as e:
        alarm(cw, unique("bad"), "E2E/x", DatapointsToAlarm=3)
    assert "DatapointsToAlarm must be less than or equal to EvaluationPeriods" in error_message(e)


def test_cli_alarm_calls(cwserver):
    name = unique("cli-alarm")
    cwserver.aws(
        "cloudwatch", "put-metric-alarm", "--alarm-name", name, "--namespace", "E2E/cli", "--metric-name", "Load",
        "--statistic", "Average", "--period", "60", "--evaluation-periods", "2", "--threshold", "5",
        "--comparison-operator", "GreaterThanOrEqualToThreshold",
    )
    out = cwserver.aws("cloudwatch", "describe-alarms", "--alarm-names", name)
    assert [a["AlarmName"] for a in out["MetricAlarms"]] == [name]
    assert out["MetricAlarms"][0]["EvaluationPeriods"] == 2
    cwserver.aws("cloudwatch", "delete-alarms", "--alarm-names", name)
    assert cwserver.aws("cloudwatch", "describe-alarms", "--alarm-names", name)["MetricAlarms"] == []


def test_metric_math_alarm(cw):
    ns, name = unique("E2E/mathalarm"), unique("ratio")
    cw.put_metric_alarm(
        AlarmName=name,
        EvaluationPeriods=1,
        Threshold=100.0,
        ComparisonOperator="GreaterThanThreshold",
        Metrics=[
            {"Id": "m1", "MetricStat": {"Metric": {"Namespace": ns, "MetricName": "Load"}, "Period": 60, "Stat": "Sum"}, "ReturnData": False},
            {"Id": "e1", "Expression": "m1 * 2", "Label": "double", "ReturnData": True},
        ],
    )
    a = state(cw, name)
    assert a["Metrics"][1]["Expression"] == "m1 * 2" and "MetricName" not in a
    cw.put_metric_data(Namespace=ns, MetricData=[{"MetricName": "Load", "Value": 80.0}])
    a = wait_state(cw, name, "ALARM")
    assert "[160.0 (" in a["StateReason"], a["StateReason"]


def test_high_resolution_alarm(cw):
    ns, name = unique("E2E/hires"), unique("hires")
    alarm(cw, name, ns, Period=10)
    cw.put_metric_data(Namespace=ns, MetricData=[{"MetricName": "Load", "Value": 90.0, "StorageResolution": 1}])
    # A 10-second period lasts under a real second at 5 s per minute.
    a = wait_state(cw, name, "ALARM", timeout=PERIOD)
    assert json.loads(a["StateReasonData"])["period"] == 10
