"""Amazon CloudWatch Logs (logs, AWS JSON 1.1) with boto3 and the AWS CLI: log groups (classes,
retention and its enforcement, tags), log streams, PutLogEvents (its limits and rejections),
GetLogEvents and its tokens, FilterLogEvents with every filter pattern kind, `aws logs tail`,
StartLiveTail (boto3 and the AWS CLI v1's `start-live-tail`), metric filters, Logs Insights,
and the exception paths with AWS's messages.

StartLiveTail is sent to `stream-<endpoint host>` by the SDKs (a host prefix): the tests turn
the prefix off as README.md says (boto3's `inject_host_prefix=False`,
`AWS_DISABLE_HOST_PREFIX_INJECTION=true` for the CLI)."""

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from conftest import AWS_CLI, Estiba, error_code, error_message, unique, wait_until

DAY_MS = 86_400_000
RETENTION_VALUES = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]


@pytest.fixture(scope="module")
def srv():
    """One server for the module, with a fast retention pass."""
    d = tempfile.mkdtemp(prefix="estiba-logs-")
    e = Estiba(d, extra_args=["--logs-retention-every", "1s"]).start()
    yield e
    e.stop()
    shutil.rmtree(d, ignore_errors=True)


def client(server, **config):
    return boto3.client(
        "logs",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(retries={"max_attempts": 1}, **config),
    )


@pytest.fixture(scope="module")
def logs(srv):
    return client(srv)


def now_ms():
    return int(time.time() * 1000)


def group_with_stream(logs, stream="s"):
    g = unique("/test/g")
    logs.create_log_group(logGroupName=g)
    logs.create_log_stream(logGroupName=g, logStreamName=stream)
    return g


def put(logs, group, stream, messages, ts=None):
    ts = now_ms() if ts is None else ts
    events = [{"timestamp": ts + i, "message": m} for i, m in enumerate(messages)]
    return logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


def fails(excinfo_code, fn, *args, **kw):
    with pytest.raises(ClientError) as e:
        fn(*args, **kw)
    assert error_code(e) == excinfo_code, error_message(e)
    return error_message(e)


def filter_messages(logs, group, **kw):
    out, token = [], None
    while True:
        args = dict(logGroupName=group, **kw)
        if token:
            args["nextToken"] = token
        r = logs.filter_log_events(**args)
        out += [e["message"] for e in r["events"]]
        token = r.get("nextToken")
        if not token:
            return out


# ---------------------------------------------------------------------------------------------
# Log groups


def test_group_lifecycle(logs):
    g = unique("/ecs/web")
    logs.create_log_group(logGroupName=g)
    [d] = logs.describe_log_groups(logGroupNamePrefix=g)["logGroups"]
    assert d["logGroupName"] == g
    assert d["arn"] == f"arn:aws:logs:us-east-1:000000000000:log-group:{g}:*"
    assert d["logGroupArn"] == f"arn:aws:logs:us-east-1:000000000000:log-group:{g}"
    assert d["storedBytes"] == 0 and d["metricFilterCount"] == 0
    assert d["logGroupClass"] == "STANDARD"
    assert abs(d["creationTime"] - now_ms()) < 60_000
    assert "retentionInDays" not in d
    msg = fails("ResourceAlreadyExistsException", logs.create_log_group, logGroupName=g)
    assert msg == "The specified log group already exists"
    logs.delete_log_group(logGroupName=g)
    assert logs.describe_log_groups(logGroupNamePrefix=g)["logGroups"] == []
    msg = fails("ResourceNotFoundException", logs.delete_log_group, logGroupName=g)
    assert msg == "The specified log group does not exist."


def test_group_names_are_validated(logs):
    msg = fails("InvalidParameterException", logs.create_log_group, logGroupName="bad:name")
    assert "logGroupName" in msg and "regular expression pattern" in msg
    msg = fails("InvalidParameterException", logs.create_log_group, logGroupName="a" * 513)
    assert "logGroupName" in msg and "512" in msg


def test_stored_bytes_and_recreated_group_is_empty(logs):
    g = group_with_stream(logs)
    put(logs, g, "s", ["x" * 100] * 10)
    [d] = logs.describe_log_groups(logGroupNamePrefix=g)["logGroups"]
    assert d["storedBytes"] > 0
    logs.delete_log_group(logGroupName=g)
    logs.create_log_group(logGroupName=g)
    assert logs.describe_log_streams(logGroupName=g)["logStreams"] == []
    fails("ResourceNotFoundException", logs.get_log_events, logGroupName=g, logStreamName="s")


def test_describe_groups_prefix_pattern_and_paging(logs):
    base = unique("/pg")
    names = sorted(f"{base}/{n}" for n in ["alpha", "beta", "gamma", "delta", "Alphabet"])
    for n in names:
        logs.create_log_group(logGroupName=n)
    got, token = [], None
    while True:
        kw = {"nextToken": token} if token else {}
        r = logs.describe_log_groups(logGroupNamePrefix=base, limit=2, **kw)
        assert len(r["logGroups"]) <= 2
        got += [x["logGroupName"] for x in r["logGroups"]]
        token = r.get("nextToken")
        if not token:
            break
    assert got == names
    # The pattern is a case-sensitive substring of the name.
    pat = [x["logGroupName"] for x in logs.describe_log_groups(logGroupNamePattern=base + "/alpha")["logGroups"]]
    assert pat == [f"{base}/alpha"]
    pat = [x["logGroupName"] for x in logs.describe_log_groups(logGroupNamePattern="lpha")["logGroups"]]
    assert f"{base}/alpha" in pat and f"{base}/Alphabet" in pat
    by_arn = logs.describe_log_groups(logGroupIdentifiers=[f"arn:aws:logs:us-east-1:000000000000:log-group:{base}/beta"])
    assert [x["logGroupName"] for x in by_arn["logGroups"]] == [f"{base}/beta"]
    msg = fails("InvalidParameterException", logs.describe_log_groups, logGroupNamePrefix=base, logGroupNamePattern="a")
    assert "mutually exclusive" in msg
    fails("InvalidParameterException", logs.describe_log_groups, nextToken="garbage!")
    fails("InvalidParameterException", logs.describe_log_groups, limit=51)


def test_log_group_classes(logs):
    g = unique("/ia")
    logs.create_log_group(logGroupName=g, logGroupClass="INFREQUENT_ACCESS")
    [d] = logs.describe_log_groups(logGroupNamePrefix=g)["logGroups"]
    assert d["logGroupClass"] == "INFREQUENT_ACCESS"
    std = unique("/std")
    logs.create_log_group(logGroupName=std)
    ia = [x["logGroupName"] for x in logs.describe_log_groups(logGroupClass="INFREQUENT_ACCESS")["logGroups"]]
    assert g in ia and std not in ia
    msg = fails("InvalidParameterException", logs.create_log_group, logGroupName=unique("/x"), logGroupClass="COLD")
    assert "logGroupClass" in msg


def test_retention_policy_values(logs):
    g = unique("/ret")
    logs.create_log_group(logGroupName=g)
    for days in (1, 7, 3653):
        logs.put_retention_policy(logGroupName=g, retentionInDays=days)
        assert logs.describe_log_groups(logGroupNamePrefix=g)["logGroups"][0]["retentionInDays"] == days
    for bad in (2, 0, 10000):
        with pytest.raises(ClientError) as e:
            logs.put_retention_policy(logGroupName=g, retentionInDays=bad)
        assert error_code(e) == "InvalidParameterException"
        if bad == 2:
            assert error_message(e) == (
                "1 validation error detected: Value '2' at 'retentionInDays' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{', '.join(map(str, RETENTION_VALUES))}]"
            )
    logs.delete_retention_policy(logGroupName=g)
    assert "retentionInDays" not in logs.describe_log_groups(logGroupNamePrefix=g)["logGroups"][0]
    msg = fails("ResourceNotFoundException", logs.put_retention_policy, logGroupName=g + "-nope", retentionInDays=1)
    assert msg == "The specified log group does not exist."
    fails("ResourceNotFoundException", logs.delete_retention_policy, logGroupName=g + "-nope")


def test_retention_is_enforced(logs):
    g = group_with_stream(logs)
    old = now_ms() - 2 * DAY_MS
    put(logs, g, "s", ["old-1", "old-2"], ts=old)
    put(logs, g, "s", ["new-1"])
    assert [e["message"] for e in logs.get_log_events(logGroupName=g, logStreamName="s")["events"]] == ["old-1", "old-2", "new-1"]
    logs.put_retention_policy(logGroupName=g, retentionInDays=1)

    def expired():
        return [e["message"] for e in logs.get_log_events(logGroupName=g, logStreamName="s", startFromHead=True)["events"]] == ["new-1"]

    wait_until(expired, timeout=20, what="events older than the retention gone")
    assert filter_messages(logs, g) == ["new-1"]
    # Events older than the retention are now rejected at once.
    r = put(logs, g, "s", ["late"], ts=now_ms() - 2 * DAY_MS)
    assert r["rejectedLogEventsInfo"]["expiredLogEventEndIndex"] == 0


def test_tags(logs):
    g = unique("/tags")
    logs.create_log_group(logGroupName=g, tags={"team": "web", "env": "dev"})
    arn = f"arn:aws:logs:us-east-1:000000000000:log-group:{g}"
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "web", "env": "dev"}
    logs.tag_resource(resourceArn=arn, tags={"env": "prod", "cost": "1"})
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "web", "env": "prod", "cost": "1"}
    logs.untag_resource(resourceArn=arn, tagKeys=["team", "missing"])
    assert logs.list_tags_for_resource(resourceArn=arn)["tags"] == {"env": "prod", "cost": "1"}
    # The older group-name calls.
    logs.tag_log_group(logGroupName=g, tags={"old": "api"})
    assert logs.list_tags_log_group(logGroupName=g)["tags"]["old"] == "api"
    logs.untag_log_group(logGroupName=g, tags=["old"])
    assert "old" not in logs.list_tags_log_group(logGroupName=g)["tags"]
    fails("ResourceNotFoundException", logs.list_tags_for_resource, resourceArn=arn + "-nope")
    fails("ResourceNotFoundException", logs.tag_resource, resourceArn=arn + "-nope", tags={"a": "b"})
    fails("InvalidParameterException", logs.list_tags_for_resource, resourceArn="not-an-arn")
    many = {f"k{i}": "v" for i in range(49)}
    fails("TooManyTagsException", logs.tag_resource, resourceArn=arn, tags=many)


# ---------------------------------------------------------------------------------------------
# Log streams and events


def test_streams_describe_order_and_errors(logs):
    g = unique("/streams")
    logs.create_log_group(logGroupName=g)
    for s in ["b", "a", "c", "app/1", "app/2"]:
        logs.create_log_stream(logGroupName=g, logStreamName=s)
    t = now_ms()
    put(logs, g, "c", ["one"], ts=t - 5000)
    put(logs, g, "a", ["two"], ts=t - 1000)
    names = lambda r: [s["logStreamName"] for s in r["logStreams"]]
    assert names(logs.describe_log_streams(logGroupName=g)) == ["a", "app/1", "app/2", "b", "c"]
    assert names(logs.describe_log_streams(logGroupName=g, descending=True)) == ["c", "b", "app/2", "app/1", "a"]
    by_time = names(logs.describe_log_streams(logGroupName=g, orderBy="LastEventTime", descending=True))
    assert by_time[:2] == ["a", "c"]
    assert names(logs.describe_log_streams(logGroupName=g, logStreamNamePrefix="app/")) == ["app/1", "app/2"]
    msg = fails(
        "InvalidParameterException",
        logs.describe_log_streams,
        logGroupName=g,
        orderBy="LastEventTime",
        logStreamNamePrefix="app",
    )
    assert msg == "Cannot order by LastEventTime with a logStreamNamePrefix."
    # Paging, both orders.
    for desc in (False, True):
        got, token = [], None
        while True:
            kw = {"nextToken": token} if token else {}
            r = logs.describe_log_streams(logGroupName=g, limit=2, descending=desc, **kw)
            got += names(r)
            token = r.get("nextToken")
            if not token:
                break
        assert got == sorted(got, reverse=desc) and len(got) == 5
    [a] = [s for s in logs.describe_log_streams(logGroupName=g)["logStreams"] if s["logStreamName"] == "a"]
    assert a["arn"] == f"arn:aws:logs:us-east-1:000000000000:log-group:{g}:log-stream:a"
    assert a["firstEventTimestamp"] == a["lastEventTimestamp"] == t - 1000
    # By ARN.
    arn = f"arn:aws:logs:us-east-1:000000000000:log-group:{g}"
    assert len(logs.describe_log_streams(logGroupIdentifier=arn)["logStreams"]) == 5
    msg = fails("ResourceAlreadyExistsException", logs.create_log_stream, logGroupName=g, logStreamName="a")
    assert msg == "The specified log stream already exists"
    msg = fails("ResourceNotFoundException", logs.create_log_stream, logGroupName=g + "-nope", logStreamName="a")
    assert msg == "The specified log group does not exist."
    msg = fails("InvalidParameterException", logs.create_log_stream, logGroupName=g, logStreamName="bad:name")
    assert "logStreamName" in msg
    logs.delete_log_stream(logGroupName=g, logStreamName="b")
    msg = fails("ResourceNotFoundException", logs.delete_log_stream, logGroupName=g, logStreamName="b")
    assert msg == "The specified log stream does not exist."
    fails("ResourceNotFoundException", logs.describe_log_streams, logGroupName=g + "-nope")
    fails("InvalidParameterException", logs.describe_log_streams, logGroupName=g, limit=51)


def test_put_and_get_events(logs):
    g = group_with_stream(logs)
    t = now_ms() - 10_000
    r = put(logs, g, "s", ["first", "second", "third"], ts=t)
    assert r["nextSequenceToken"].isdigit() and "rejectedLogEventsInfo" not in r
    # A stale sequence token is ignored, as AWS now does.
    r2 = logs.put_log_events(logGroupName=g, logStreamName="s", sequenceToken="1", logEvents=[{"timestamp": t + 5, "message": "fourth"}])
    assert r2["nextSequenceToken"] != r["nextSequenceToken"]
    evs = logs.get_log_events(logGroupName=g, logStreamName="s")["events"]
    assert [e["message"] for e in evs] == ["first", "second", "third", "fourth"]
    assert [e["timestamp"] for e in evs] == [t, t + 1, t + 2, t + 5]
    assert all(abs(e["ingestionTime"] - now_ms()) < 60_000 for e in evs)
    head = logs.get_log_events(logGroupName=g, logStreamName="s", startFromHead=True, limit=2)["events"]
    assert [e["message"] for e in head] == ["first", "second"]
    tail = logs.get_log_events(logGroupName=g, logStreamName="s", limit=2)["events"]
    assert [e["message"] for e in tail] == ["third", "fourth"]
    # startTime inclusive, endTime exclusive.
    mid = logs.get_log_events(logGroupName=g, logStreamName="s", startTime=t + 1, endTime=t + 5, startFromHead=True)["events"]
    assert [e["message"] for e in mid] == ["second", "third"]
    arn = f"arn:aws:logs:us-east-1:000000000000:log-group:{g}"
    assert len(logs.get_log_events(logGroupIdentifier=arn, logStreamName="s")["events"]) == 4
    # As in AWS, the identifier's pattern refuses the `:*` form.
    fails("InvalidParameterException", logs.get_log_events, logGroupIdentifier=arn + ":*", logStreamName="s")
    fails("InvalidParameterException", logs.get_log_events, logGroupName=g, logGroupIdentifier=arn, logStreamName="s")
    msg = fails("ResourceNotFoundException", logs.get_log_events, logGroupName=g, logStreamName="nope")
    assert msg == "The specified log stream does not exist."
    msg = fails("ResourceNotFoundException", logs.put_log_events, logGroupName=g, logStreamName="nope", logEvents=[{"timestamp": t, "message": "x"}])
    assert msg == "The specified log stream does not exist."
    msg = fails("ResourceNotFoundException", logs.put_log_events, logGroupName=g + "x", logStreamName="s", logEvents=[{"timestamp": t, "message": "x"}])
    assert msg == "The specified log group does not exist."
    fails("InvalidParameterException", logs.get_log_events, logGroupName=g, logStreamName="s", limit=10001)


def test_put_log_events_limits_and_rejections(logs):
    g = group_with_stream(logs)
    t = now_ms()
    msg = fails("InvalidParameterException", put_raw, logs, g, [(t, "b"), (t - 1, "a")])
    assert msg == "Log events in a single PutLogEvents request must be in chronological order."
    msg = fails("InvalidParameterException", put_raw, logs, g, [(t - DAY_MS - 1, "a"), (t, "b")])
    assert msg == "The batch of log events in a single PutLogEvents request cannot span more than 24 hours."
    msg = fails("InvalidParameterException", put_raw, logs, g, [(t, "x" * (1_048_576 - 26 + 1))])
    assert msg == "Upload too large: 1048577 bytes exceeds limit of 1048576"
    # Exactly the limit is fine: 26 bytes counted per event.
    put_raw(logs, g, [(t, "x" * (1_048_576 - 26))])
    msg = fails("InvalidParameterException", put_raw, logs, g, [(t, "m")] * 10_001)
    assert "logEvents" in msg and "10000" in msg
    put_raw(logs, g, [(t, "m")] * 10_000)
    # Too old (more than 14 days), too new (more than 2 hours ahead): rejected, not failed.
    r = put_raw(logs, g, [(t - 15 * DAY_MS, "old"), (t - 15 * DAY_MS + 1, "old2")])
    assert r["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 1}
    r = put_raw(logs, g, [(t, "ok"), (t + 3 * 3_600_000, "future")])
    assert r["rejectedLogEventsInfo"] == {"tooNewLogEventStartIndex": 1}
    r = put_raw(logs, g, [(t - 14 * DAY_MS - 60_000, "old"), (t - 14 * DAY_MS + 60_000, "kept")])
    assert r["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 0}
    msgs = filter_messages(logs, g, filterPattern="?kept ?future ?ok ?old")
    assert sorted(msgs) == ["kept", "ok"]


def put_raw(logs, group, events, stream="s"):
    return logs.put_log_events(
        logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": ts, "message": m} for ts, m in events]
    )


def test_get_log_events_tokens_page_both_ways(logs):
    g = group_with_stream(logs)
    t = now_ms() - 60_000
    put(logs, g, "s", [f"m{i:02}" for i in range(25)], ts=t)
    # Forward from the head.
    got, token, pages = [], None, 0
    while True:
        kw = {"nextToken": token} if token else {"startFromHead": True}
        r = logs.get_log_events(logGroupName=g, logStreamName="s", limit=10, **kw)
        assert r["nextForwardToken"].startswith("f/") and r["nextBackwardToken"].startswith("b/")
        got += [e["message"] for e in r["events"]]
        pages += 1
        if r["nextForwardToken"] == token:
            assert r["events"] == []
            break
        token = r["nextForwardToken"]
    assert got == [f"m{i:02}" for i in range(25)] and pages == 4
    # The end token repeats.
    again = logs.get_log_events(logGroupName=g, logStreamName="s", nextToken=token)
    assert again["events"] == [] and again["nextForwardToken"] == token
    # New events appear through the repeated token.
    put(logs, g, "s", ["late"], ts=t + 100)
    r = logs.get_log_events(logGroupName=g, logStreamName="s", nextToken=token)
    assert [e["message"] for e in r["events"]] == ["late"]
    # Backward from the tail.
    got, token = [], None
    while True:
        kw = {"nextToken": token} if token else {}
        r = logs.get_log_events(logGroupName=g, logStreamName="s", limit=10, **kw)
        got = [e["message"] for e in r["events"]] + got
        if r["nextBackwardToken"] == token:
            assert r["events"] == []
            break
        token = r["nextBackwardToken"]
    assert got == [f"m{i:02}" for i in range(25)] + ["late"]
    again = logs.get_log_events(logGroupName=g, logStreamName="s", nextToken=token)
    assert again["events"] == [] and again["nextBackwardToken"] == token
    for bad in ["x", "f/abc", "q/0001", ""]:
        if not bad:
            continue
        msg = fails("InvalidParameterException", logs.get_log_events, logGroupName=g, logStreamName="s", nextToken=bad)
        assert msg == "The specified nextToken is invalid."


def test_get_log_events_one_megabyte_pages(logs):
    g = group_with_stream(logs)
    t = now_ms() - 60_000
    big = "y" * 200_000
    for i in range(3):
        put_raw(logs, g, [(t + i * 2 + j, f"{i}{j}{big}") for j in range(2)])
    r = logs.get_log_events(logGroupName=g, logStreamName="s", startFromHead=True)
    assert 0 < len(r["events"]) < 6
    assert sum(len(e["message"]) + 26 for e in r["events"]) <= 1_048_576
    r2 = logs.get_log_events(logGroupName=g, logStreamName="s", nextToken=r["nextForwardToken"])
    assert len(r["events"]) + len(r2["events"]) == 6


# ---------------------------------------------------------------------------------------------
# FilterLogEvents and filter patterns

TEXT = [
    "ERROR connection refused by upstream",
    "ERROR timeout after 30s",
    "WARN disk almost full",
    "INFO request served",
    "DEBUG Exiting with ERRORCODE: -1",
]
JSON_EVENTS = [
    {"level": "error", "latency": 250, "user": {"id": 7}},
    {"level": "error", "latency": 50, "user": {"id": 8}},
    {"level": "info", "latency": 500, "user": {"id": 9}},
]
SPACED = [
    "10.0.0.1 alice GET 404 512",
    "10.0.0.2 bob GET 200 1024",
    "10.0.0.3 carol POST 404 2048",
]


@pytest.fixture(scope="module")
def searchable(logs):
    g = unique("/search")
    logs.create_log_group(logGroupName=g)
    for s in ("text", "json", "spaced", "other/1"):
        logs.create_log_stream(logGroupName=g, logStreamName=s)
    t = now_ms() - 60_000
    put(logs, g, "text", TEXT, ts=t)
    put(logs, g, "json", [json.dumps(e) for e in JSON_EVENTS], ts=t + 100)
    put(logs, g, "spaced", SPACED, ts=t + 200)
    put(logs, g, "other/1", ["ERROR elsewhere"], ts=t + 300)
    return g, t


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("", TEXT + [json.dumps(e) for e in JSON_EVENTS] + SPACED + ["ERROR elsewhere"]),
        ("ERROR", [TEXT[0], TEXT[1], TEXT[4], "ERROR elsewhere"]),
        ("ERROR timeout", [TEXT[1]]),
        ('"connection refused"', [TEXT[0]]),
        ("ERROR -timeout", [TEXT[0], TEXT[4], "ERROR elsewhere"]),
        ("?WARN ?timeout", [TEXT[1], TEXT[2]]),
        ('{ $.level = "error" && $.latency > 100 }', [json.dumps(JSON_EVENTS[0])]),
        ('{ $.level = "error" || $.user.id = 9 }', [json.dumps(e) for e in JSON_EVENTS]),
        ("{ $.latency >= 250 }", [json.dumps(JSON_EVENTS[0]), json.dumps(JSON_EVENTS[2])]),
        ("[ip, user, method, status = 404, bytes]", [SPACED[0], SPACED[2]]),
        ("[ip, user, method = POST, ...]", [SPACED[2]]),
        ("[..., status = 200, bytes > 1000]", [SPACED[1]]),
    ],
)
def test_filter_patterns(logs, searchable, pattern, expected):
    g, _ = searchable
    got = filter_messages(logs, g, filterPattern=pattern)
    assert got == expected


def test_filter_log_events_streams_times_ids_and_paging(logs, searchable):
    g, t = searchable
    r = logs.filter_log_events(logGroupName=g, logStreamNames=["text"], filterPattern="ERROR", interleaved=True)
    assert [e["logStreamName"] for e in r["events"]] == ["text"] * 3
    assert all(len(e["eventId"]) == 56 and e["eventId"].isdigit() for e in r["events"])
    assert {s["logStreamName"] for s in r["searchedLogStreams"]} == {"text"}
    assert all(s["searchedCompletely"] for s in r["searchedLogStreams"])
    r2 = logs.filter_log_events(logGroupName=g, logStreamNames=["text"], filterPattern="ERROR")
    assert [e["eventId"] for e in r2["events"]] == [e["eventId"] for e in r["events"]]
    assert filter_messages(logs, g, logStreamNamePrefix="other/") == ["ERROR elsewhere"]
    assert filter_messages(logs, g, startTime=t + 100, endTime=t + 101) == [json.dumps(e) for e in JSON_EVENTS[:2]]
    arn = f"arn:aws:logs:us-east-1:000000000000:log-group:{g}"
    assert len(logs.filter_log_events(logGroupIdentifier=arn)["events"]) == 12
    # Paging.
    got, token, pages = [], None, 0
    while True:
        kw = {"nextToken": token} if token else {}
        r = logs.filter_log_events(logGroupName=g, limit=5, **kw)
        assert len(r["events"]) <= 5
        got += [e["message"] for e in r["events"]]
        pages += 1
        token = r.get("nextToken")
        if not token:
            break
    assert len(got) == 12 and pages == 3 and len(set(got)) == 12
    assert got == filter_messages(logs, g)
    msg = fails("InvalidParameterException", logs.filter_log_events, logGroupName=g, nextToken="bogus")
    assert msg == "The specified nextToken is invalid."
    fails("InvalidParameterException", logs.filter_log_events, logGroupName=g, logStreamNames=["a"], logStreamNamePrefix="a")
    fails("InvalidParameterException", logs.filter_log_events, logGroupName=g, filterPattern='{ $.level = "error"')
    fails("InvalidParameterException", logs.filter_log_events, logGroupName=g, filterPattern="[a, b")
    fails("InvalidParameterException", logs.filter_log_events, logGroupName=g, limit=10001)
    msg = fails("ResourceNotFoundException", logs.filter_log_events, logGroupName=g + "-nope")
    assert msg == "The specified log group does not exist."


# ---------------------------------------------------------------------------------------------
# The AWS CLI: logs commands and `aws logs tail`


def cli_env():
    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1", AWS_PAGER="")
    return env


def test_cli_groups_streams_events(srv):
    g = unique("/cli")
    srv.aws("logs", "create-log-group", "--log-group-name", g)
    srv.aws("logs", "put-retention-policy", "--log-group-name", g, "--retention-in-days", "14")
    d = srv.aws("logs", "describe-log-groups", "--log-group-name-prefix", g)["logGroups"][0]
    assert d["retentionInDays"] == 14
    srv.aws("logs", "create-log-stream", "--log-group-name", g, "--log-stream-name", "s")
    ev = json.dumps([{"timestamp": now_ms(), "message": "hello from the cli"}])
    r = srv.aws("logs", "put-log-events", "--log-group-name", g, "--log-stream-name", "s", "--log-events", ev)
    assert "nextSequenceToken" in r
    r = srv.aws("logs", "get-log-events", "--log-group-name", g, "--log-stream-name", "s")
    assert [e["message"] for e in r["events"]] == ["hello from the cli"]
    p = srv.aws("logs", "put-retention-policy", "--log-group-name", g, "--retention-in-days", "2", check=False)
    assert p.returncode != 0 and "InvalidParameterException" in p.stderr
    p = srv.aws("logs", "create-log-group", "--log-group-name", g, check=False)
    assert p.returncode != 0 and "ResourceAlreadyExistsException" in p.stderr


def test_cli_tail_since_and_filter(srv, logs):
    g = group_with_stream(logs, "web/1")
    put(logs, g, "web/1", ["GET /a 200", "GET /b 500 ERROR", "GET /c 200"], ts=now_ms() - 60_000)
    put(logs, g, "web/1", ["ancient"], ts=now_ms() - 3_600_000)
    p = subprocess.run(
        [AWS_CLI, "--endpoint-url", srv.endpoint, "logs", "tail", g, "--since", "10m"],
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert [l.split(" ", 2)[2] for l in lines] == ["GET /a 200", "GET /b 500 ERROR", "GET /c 200"]
    assert all(l.split(" ")[1] == "web/1" for l in lines)
    p = subprocess.run(
        [AWS_CLI, "--endpoint-url", srv.endpoint, "logs", "tail", g, "--since", "2h", "--filter-pattern", "ERROR", "--format", "short"],
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert [l.split(" ", 1)[1] for l in p.stdout.strip().splitlines()] == ["GET /b 500 ERROR"]


def read_lines(proc, q):
    for line in proc.stdout:
        q.put(line.rstrip("\n"))


def wait_for_line(q, want, timeout):
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        try:
            line = q.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if want in line:
            return seen
    raise AssertionError(f"{want!r} not printed within {timeout}s; saw {seen}")


def test_cli_tail_follow(srv, logs):
    g = group_with_stream(logs)
    put(logs, g, "s", ["before the tail"], ts=now_ms() - 30_000)
    proc = subprocess.Popen(
        [AWS_CLI, "--endpoint-url", srv.endpoint, "logs", "tail", g, "--follow", "--since", "10m", "--format", "short"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )
    q = queue.Queue()
    threading.Thread(target=read_lines, args=(proc, q), daemon=True).start()
    try:
        wait_for_line(q, "before the tail", 30)
        put(logs, g, "s", ["appended while following"])
        seen = wait_for_line(q, "appended while following", 30)
        assert not any("before the tail" in l for l in seen), "an event printed twice"
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------
# StartLiveTail


def live_client(srv):
    return client(srv, inject_host_prefix=False, read_timeout=30)


def collect_live(stream, out, stop):
    try:
        for ev in stream:
            if stop.is_set():
                break
            out.put(ev)
    except Exception as e:  # the stream closed under us
        out.put({"error": repr(e)})


def test_live_tail_boto3(srv, logs):
    g1 = group_with_stream(logs, "app/1")
    g2 = group_with_stream(logs, "x")
    arn1 = f"arn:aws:logs:us-east-1:000000000000:log-group:{g1}"
    arn2 = f"arn:aws:logs:us-east-1:000000000000:log-group:{g2}"
    put(logs, g1, "app/1", ["from before the session"])
    live = live_client(srv)
    r = live.start_live_tail(logGroupIdentifiers=[arn1, arn2], logEventFilterPattern="?hello ?world")
    out, stop = queue.Queue(), threading.Event()
    threading.Thread(target=collect_live, args=(r["responseStream"], out, stop), daemon=True).start()
    first = out.get(timeout=10)
    assert first["sessionStart"]["logGroupIdentifiers"] == [arn1, arn2]
    assert first["sessionStart"]["logEventFilterPattern"] == "?hello ?world"
    put(logs, g1, "app/1", ["hello one", "skipped"])
    put(logs, g2, "x", ["world two"])
    got = []
    deadline = time.time() + 15
    while time.time() < deadline and len(got) < 2:
        ev = out.get(timeout=15)
        assert "error" not in ev, ev
        upd = ev["sessionUpdate"]
        assert upd["sessionMetadata"]["sampled"] is False
        got += upd["sessionResults"]
    stop.set()
    assert sorted(e["message"] for e in got) == ["hello one", "world two"]
    by_msg = {e["message"]: e for e in got}
    assert by_msg["hello one"]["logGroupIdentifier"] == arn1 and by_msg["hello one"]["logStreamName"] == "app/1"
    assert by_msg["world two"]["logGroupIdentifier"] == arn2
    assert all("timestamp" in e and "ingestionTime" in e for e in got)
    r["responseStream"].close()


def test_live_tail_stream_filters_and_errors(srv, logs):
    g = group_with_stream(logs, "keep/1")
    logs.create_log_stream(logGroupName=g, logStreamName="drop")
    arn = f"arn:aws:logs:us-east-1:000000000000:log-group:{g}"
    live = live_client(srv)
    r = live.start_live_tail(logGroupIdentifiers=[arn], logStreamNamePrefixes=["keep/"])
    out, stop = queue.Queue(), threading.Event()
    threading.Thread(target=collect_live, args=(r["responseStream"], out, stop), daemon=True).start()
    assert "sessionStart" in out.get(timeout=10)
    put(logs, g, "drop", ["not me"])
    put(logs, g, "keep/1", ["me"])
    got = []
    deadline = time.time() + 10
    while time.time() < deadline and not got:
        got += out.get(timeout=10)["sessionUpdate"]["sessionResults"]
    stop.set()
    assert [e["message"] for e in got] == ["me"]
    r["responseStream"].close()
    msg = fails("ResourceNotFoundException", live.start_live_tail, logGroupIdentifiers=[arn + "-nope"])
    assert msg == "The specified log group does not exist."
    fails("InvalidParameterException", live.start_live_tail, logGroupIdentifiers=[arn] * 11)
    fails("InvalidParameterException", live.start_live_tail, logGroupIdentifiers=[arn], logStreamNames=["a"], logStreamNamePrefixes=["a"])
    fails("InvalidParameterException", live.start_live_tail, logGroupIdentifiers=[arn, arn], logStreamNames=["a"])
    fails("InvalidParameterException", live.start_live_tail, logGroupIdentifiers=[arn], logEventFilterPattern="{ $.a = ")


def test_live_tail_cli(srv, logs):
    """`aws logs start-live-tail` (the AWS CLI v1 in this Python, which has the command; the
    Debian CLI v2.9 predates it) with host prefix injection off."""
    g = group_with_stream(logs)
    arn = f"arn:aws:logs:us-east-1:000000000000:log-group:{g}"
    env = cli_env()
    env["AWS_DISABLE_HOST_PREFIX_INJECTION"] = "true"
    proc = subprocess.Popen(
        [sys.executable, "-m", "awscli", "--endpoint-url", srv.endpoint, "logs", "start-live-tail", "--log-group-identifiers", arn],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    q = queue.Queue()
    threading.Thread(target=read_lines, args=(proc, q), daemon=True).start()
    try:
        # The session starts once the CLI has its answer; append until a line shows up.
        deadline = time.time() + 30
        while time.time() < deadline:
            put(logs, g, "s", ["live from the cli"])
            try:
                line = q.get(timeout=2)
                break
            except queue.Empty:
                assert proc.poll() is None, proc.stderr.read()
        else:
            raise AssertionError("start-live-tail printed nothing")
        assert line == "live from the cli"
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------
# Metric filters


def test_metric_filters(logs):
    g = unique("/mf")
    logs.create_log_group(logGroupName=g)
    tr = [{"metricName": "Errors", "metricNamespace": "App", "metricValue": "1", "defaultValue": 0.0}]
    logs.put_metric_filter(logGroupName=g, filterName="errors", filterPattern="ERROR", metricTransformations=tr)
    lat = [{"metricName": "Latency", "metricNamespace": "App", "metricValue": "$.latency", "unit": "Milliseconds"}]
    logs.put_metric_filter(logGroupName=g, filterName="latency", filterPattern="{ $.latency > 0 }", metricTransformations=lat)
    fs = logs.describe_metric_filters(logGroupName=g)["metricFilters"]
    assert [f["filterName"] for f in fs] == ["errors", "latency"]
    assert fs[0]["filterPattern"] == "ERROR" and fs[0]["logGroupName"] == g
    assert fs[0]["metricTransformations"] == tr
    assert fs[1]["metricTransformations"][0]["unit"] == "Milliseconds"
    assert logs.describe_log_groups(logGroupNamePrefix=g)["logGroups"][0]["metricFilterCount"] == 2
    assert [f["filterName"] for f in logs.describe_metric_filters(logGroupName=g, filterNamePrefix="lat")["metricFilters"]] == ["latency"]
    by_metric = logs.describe_metric_filters(metricName="Errors", metricNamespace="App")["metricFilters"]
    assert any(f["filterName"] == "errors" and f["logGroupName"] == g for f in by_metric)
    # Replacing keeps one filter of that name.
    logs.put_metric_filter(logGroupName=g, filterName="errors", filterPattern="?ERROR ?FATAL", metricTransformations=tr)
    fs = logs.describe_metric_filters(logGroupName=g)["metricFilters"]
    assert len(fs) == 2 and fs[0]["filterPattern"] == "?ERROR ?FATAL"
    p1 = logs.describe_metric_filters(logGroupName=g, limit=1)
    p2 = logs.describe_metric_filters(logGroupName=g, limit=1, nextToken=p1["nextToken"])
    assert [f["filterName"] for f in p1["metricFilters"] + p2["metricFilters"]] == ["errors", "latency"]
    fails("InvalidParameterException", logs.put_metric_filter, logGroupName=g, filterName="bad", filterPattern="{ $.x = ", metricTransformations=tr)
    fails("InvalidParameterException", logs.describe_metric_filters, metricName="Errors")
    msg = fails("ResourceNotFoundException", logs.put_metric_filter, logGroupName=g + "-nope", filterName="f", filterPattern="", metricTransformations=tr)
    assert msg == "The specified log group does not exist."
    logs.delete_metric_filter(logGroupName=g, filterName="errors")
    assert [f["filterName"] for f in logs.describe_metric_filters(logGroupName=g)["metricFilters"]] == ["latency"]
    msg = fails("ResourceNotFoundException", logs.delete_metric_filter, logGroupName=g, filterName="errors")
    assert msg == "The specified metric filter does not exist."


# ---------------------------------------------------------------------------------------------
# Logs Insights


def run_query(logs, **kw):
    qid = logs.start_query(**kw)["queryId"]

    def done():
        r = logs.get_query_results(queryId=qid)
        return r if r["status"] in ("Complete", "Failed", "Cancelled") else None

    r = wait_until(done, timeout=30, what="query complete")
    assert r["status"] == "Complete", r
    return qid, r


def rows(r):
    return [{f["field"]: f["value"] for f in row} for row in r["results"]]


def test_insights_queries(logs):
    g = group_with_stream(logs)
    t = now_ms() - 120_000
    events = [{"level": "error" if i % 3 == 0 else "info", "latency": i * 10, "n": i} for i in range(12)]
    put(logs, g, "s", [json.dumps(e) for e in events], ts=t)
    start, end = (t - 60_000) // 1000, (now_ms() + 60_000) // 1000
    qid, r = run_query(
        logs,
        logGroupName=g,
        startTime=start,
        endTime=end,
        queryString='fields @timestamp, @message, latency | filter level = "error" | sort latency desc | limit 3',
    )
    got = rows(r)
    assert [int(x["latency"]) for x in got] == [90, 60, 30]
    assert all("@ptr" in x and "@timestamp" in x and json.loads(x["@message"])["level"] == "error" for x in got)
    st = r["statistics"]
    assert st["recordsScanned"] == 12 and st["recordsMatched"] == 4
    _, r = run_query(logs, logGroupNames=[g], startTime=start, endTime=end, queryString="stats count(*) as n by level | sort level")
    assert [(x["level"], x["n"]) for x in rows(r)] == [("error", "4"), ("info", "8")]
    assert all("@ptr" not in x for x in rows(r))
    _, r = run_query(logs, logGroupName=g, startTime=start, endTime=end, queryString="stats count(*) by bin(1h)")
    assert sum(int(x["count(*)"]) for x in rows(r)) == 12
    # A time range without events.
    _, r = run_query(logs, logGroupName=g, startTime=start - 86_400, endTime=start - 3600, queryString="fields @message")
    assert r["results"] == []
    qs = logs.describe_queries(logGroupName=g)["queries"]
    assert qid in [q["queryId"] for q in qs]
    assert all(q["status"] == "Complete" for q in qs)
    assert logs.stop_query(queryId=qid)["success"] is False
    fails("MalformedQueryException", logs.start_query, logGroupName=g, startTime=start, endTime=end, queryString="fields | | nonsense(")
    msg = fails("ResourceNotFoundException", logs.start_query, logGroupName=g + "-nope", startTime=start, endTime=end, queryString="fields @message")
    assert msg == "The specified log group does not exist."
    fails("InvalidParameterException", logs.start_query, logGroupName=g, startTime=end, endTime=start, queryString="fields @message")
    fails("ResourceNotFoundException", logs.get_query_results, queryId="00000000-0000-0000-0000-000000000000")


def test_unimplemented_operations_say_so(logs):
    fails("NotImplemented", logs.describe_destinations)
