"""The AWS JSON 1.1 protocol: targets, errors, request ids, and bad input of every kind."""

import json
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, unique

TARGET = "AmazonEC2ContainerServiceV20141113."


def post(endpoint, target, body, headers=None):
    data = body if isinstance(body, bytes) else body.encode()
    req = urllib.request.Request(endpoint + "/", data=data, method="POST")
    req.add_header("Content-Type", "application/x-amz-json-1.1")
    if target is not None:
        req.add_header("X-Amz-Target", target)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read() or b"null")


def assert_alive(shared):
    assert shared.client().list_clusters()["clusterArns"] is not None


def test_success_has_request_id_and_content_type(shared):
    status, headers, body = post(shared.endpoint, TARGET + "ListClusters", "{}")
    assert status == 200
    assert headers.get("x-amzn-requestid")
    assert headers["content-type"] == "application/x-amz-json-1.1"
    assert "clusterArns" in body


def test_unknown_operation(shared):
    status, headers, body = post(shared.endpoint, TARGET + "LaunchRockets", "{}")
    assert status == 400
    assert body["__type"] == "UnknownOperationException"
    assert headers.get("x-amzn-requestid")
    status, _, body = post(shared.endpoint, "SomeOtherService_2020.ListThings", "{}")
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    status, _, body = post(shared.endpoint, None, "{}")
    assert (status, body["__type"]) == (400, "UnknownOperationException")


def test_not_json_is_a_serialization_exception(shared):
    for bad in ["{not json", "[1,2", '{"clusterName": "a"} trailing', "\xff\xfe"]:
        status, _, body = post(shared.endpoint, TARGET + "CreateCluster", bad)
        assert status == 400, bad
        assert body["__type"] == "SerializationException", body
        assert body["message"]
    assert_alive(shared)


def test_wrong_types_are_serialization_exceptions(shared):
    status, _, body = post(shared.endpoint, TARGET + "CreateCluster", json.dumps({"clusterName": 7}))
    assert (status, body["__type"]) == (400, "SerializationException")
    assert "clusterName" in body["message"]
    status, _, body = post(shared.endpoint, TARGET + "RunTask", json.dumps({"taskDefinition": "x", "count": "ten"}))
    assert (status, body["__type"]) == (400, "SerializationException")


def test_missing_required_members(shared):
    status, _, body = post(shared.endpoint, TARGET + "DescribeTaskDefinition", "{}")
    assert status == 400
    assert body["__type"] == "InvalidParameterException"
    assert body["message"] == (
        "1 validation error detected: Value null at 'taskDefinition' failed to satisfy constraint: Member must not be null"
    )
    status, _, body = post(
        shared.endpoint, TARGET + "RegisterTaskDefinition", json.dumps({"family": "f", "containerDefinitions": [{"name": "a", "dependsOn": [{"containerName": "b"}]}]})
    )
    assert body["__type"] == "InvalidParameterException"
    assert "containerDefinitions.1.member.dependsOn.1.member.condition" in body["message"]


def test_unknown_enum_values(shared):
    status, _, body = post(shared.endpoint, TARGET + "ListTasks", json.dumps({"desiredStatus": "SLEEPING"}))
    assert (status, body["__type"]) == (400, "InvalidParameterException")
    assert "RUNNING, PENDING, STOPPED" in body["message"]
    # boto3 does not check enums client-side: the server must.
    with pytest.raises(ClientError) as e:
        shared.client().list_tasks(launchType="SPACESHIP")
    assert error_code(e) == "InvalidParameterException"


def test_model_ranges_and_lengths(shared):
    ecs = shared.client()
    name = unique("c")
    ecs.create_cluster(clusterName=name)
    arn = f"arn:aws:ecs:us-east-1:000000000000:cluster/{name}"
    status, _, body = post(shared.endpoint, TARGET + "TagResource", json.dumps({"resourceArn": arn, "tags": [{"key": "k" * 200, "value": "v"}]}))
    assert (status, body["__type"]) == (400, "InvalidParameterException")
    assert "at 'tags.1.member.key' failed to satisfy constraint: Member must have length less than or equal to 128" in body["message"]
    tags = [{"key": f"k{i}", "value": "v"} for i in range(51)]
    status, _, body = post(shared.endpoint, TARGET + "TagResource", json.dumps({"resourceArn": arn, "tags": tags}))
    assert body["__type"] == "InvalidParameterException"
    assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == []


def test_ten_thousand_character_names(shared):
    ecs = shared.client()
    long = "n" * 10_000
    with pytest.raises(ClientError) as e:
        ecs.create_cluster(clusterName=long)
    assert error_code(e) == "InvalidParameterException"
    assert len(e.value.response["Error"]["Message"]) < 1000
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(family=long, containerDefinitions=[{"name": "a", "image": "i", "memory": 64}])
    assert error_code(e) == "ClientException"
    # Describing an unknown name is not an error.
    assert ecs.describe_clusters(clusters=[long])["failures"][0]["reason"] == "MISSING"
    assert not any(long[:100] in a for a in ecs.list_clusters()["clusterArns"])
    assert ecs.list_task_definition_families(familyPrefix="nnnn")["families"] == []


def test_oversized_bodies_are_refused(shared):
    big = json.dumps({"clusterName": "x" * (5 << 20)})
    status, _, body = post(shared.endpoint, TARGET + "CreateCluster", big)
    assert status == 413
    assert body["__type"] == "RequestEntityTooLargeException"
    assert_alive(shared)


def test_cloudwatch_keeps_its_own_request_size_limits(shared):
    # PutMetricData: 1 MB, as CloudWatch documents; through boto3, which gzips the body (the
    # limit holds for what it decompresses to).
    cw = shared.client("cloudwatch")
    value = lambda i, d: ("%08x" % ((i * 31 + d) * 2654435761 % 2**32)) * 125  # noqa: E731 (1,000 characters)
    dims = lambda i: [{"Name": f"d{d}", "Value": value(i, d)} for d in range(2)]  # noqa: E731
    data = [{"MetricName": f"m{i}", "Value": 1.0, "Dimensions": dims(i)} for i in range(1000)]
    with pytest.raises(ClientError) as e:
        cw.put_metric_data(Namespace="Big", MetricData=data)
    assert error_code(e) == "RequestEntityTooLarge"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    msg = e.value.response["Error"]["Message"]
    assert msg.startswith("Request size ") and msg.endswith(" exceeded 1048576 bytes"), msg
    assert int(msg.split()[2]) > 1 << 20
    # Half of it is taken.
    cw.put_metric_data(Namespace="Big", MetricData=data[:300])
    # GetMetricData: 614,400 bytes, as CloudWatch answers.
    queries = [
        {"Id": f"q{i}", "Expression": "SEARCH('{Big,d} MetricName=\"" + "x" * 700 + "\"', 'Sum', 60)"}
        for i in range(900)
    ]
    with pytest.raises(ClientError) as e:
        cw.get_metric_data(MetricDataQueries=queries, StartTime=0, EndTime=60)
    assert error_code(e) == "RequestEntityTooLarge"
    assert e.value.response["Error"]["Message"].endswith(" exceeded 614400 bytes")
    # Other services keep the server's limit (4 MiB): a 2 MiB ECS body is decoded.
    status, _, body = post(shared.endpoint, TARGET + "CreateCluster", json.dumps({"clusterName": "x" * (2 << 20)}))
    assert (status, body["__type"]) == (400, "InvalidParameterException")
    assert_alive(shared)


def test_empty_body_is_an_empty_request(shared):
    status, _, body = post(shared.endpoint, TARGET + "ListClusters", "")
    assert status == 200


def test_unsupported_operation_is_reported(shared):
    # Every ECS operation is served; an operation of another service that is not says so.
    with pytest.raises(ClientError) as e:
        shared.client("logs").cancel_export_task(taskId="x")
    assert error_code(e) == "NotImplemented"
    assert "CancelExportTask" in e.value.response["Error"]["Message"]


def test_region_and_account_come_from_sigv4(shared):
    auth = "AWS4-HMAC-SHA256 Credential=123456789012/20240101/ap-south-1/ecs/aws4_request, SignedHeaders=host, Signature=x"
    name = unique("c")
    status, _, body = post(shared.endpoint, TARGET + "CreateCluster", json.dumps({"clusterName": name}), {"Authorization": auth})
    assert status == 200
    assert body["cluster"]["clusterArn"] == f"arn:aws:ecs:ap-south-1:123456789012:cluster/{name}"
