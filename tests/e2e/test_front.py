"""The front door: every AWS protocol the served APIs use (AWS JSON 1.0 and 1.1, Query, EC2,
Smithy RPC v2 CBOR), routing by signing name, target prefix and action, and each protocol's
error shape for bad input. Real clients: boto3 (forced to each protocol CloudWatch's model
lists) and the AWS CLI."""

import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import boto3
import botocore.config
import botocore.loaders
import botocore.session
import cbor2
import pytest
from botocore.exceptions import ClientError

from conftest import error_code, error_message

CW_TARGET = "GraniteServiceVersion20100801"


def client_speaking(shared, tmp_path, service, protocol):
    """A boto3 client of `service` that speaks `protocol`: the service's own model with its
    `protocols` list narrowed to that one, loaded from a data path of the test's own."""
    model = botocore.loaders.create_loader().load_service_model(service, "service-2")
    model["metadata"]["protocols"] = [protocol]
    model["metadata"]["protocol"] = protocol
    d = tmp_path / "models" / service / model["metadata"]["apiVersion"]
    d.mkdir(parents=True, exist_ok=True)
    (d / "service-2.json").write_text(json.dumps(model))
    s = botocore.session.Session()
    s.get_component("data_loader").search_paths.insert(0, str(tmp_path / "models"))
    c = boto3.Session(botocore_session=s).client(
        service,
        endpoint_url=shared.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )
    assert c.meta.service_model.resolved_protocol == protocol
    return c


def raw(endpoint, path, body, headers):
    req = urllib.request.Request(endpoint + path, data=body, method="POST")
    for k, v in headers.items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def signed_headers(service, extra=None):
    h = {"Authorization": f"AWS4-HMAC-SHA256 Credential=test/20261201/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"}
    h.update(extra or {})
    return h


def xml_error(body):
    root = ET.fromstring(body)
    ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
    err = root.find(f"{ns}Error") or root.find(f"{ns}Errors/{ns}Error")
    return root.tag.replace(ns, ""), err.findtext(f"{ns}Code"), err.findtext(f"{ns}Message")


# CloudWatch: one operation, three protocols, one answer.


@pytest.mark.parametrize("protocol", ["json", "smithy-rpc-v2-cbor", "query"])
def test_cloudwatch_answers_in_every_protocol(shared, tmp_path, protocol):
    cw = client_speaking(shared, tmp_path, "cloudwatch", protocol)
    out = cw.list_metrics(Namespace="AWS/ECS")
    assert out["Metrics"] == []
    # A value the model refuses (a namespace may not start with ':') is InvalidParameterValue
    # in every protocol: Query's Code, or the x-amzn-query-error code of JSON and CBOR.
    with pytest.raises(ClientError) as e:
        cw.list_metrics(Namespace=":bad")
    assert error_code(e) == "InvalidParameterValue", e.value.response
    assert "namespace" in error_message(e)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_cloudwatch_default_client_and_the_cli_agree(shared):
    cw = shared.client("cloudwatch")
    assert cw.list_metrics()["Metrics"] == []
    assert shared.aws("cloudwatch", "list-metrics")["Metrics"] == []
    p = shared.aws("cloudwatch", "list-metrics", "--namespace", ":bad", check=False)
    assert p.returncode != 0 and "InvalidParameterValue" in p.stderr, p.stderr


def test_cloudwatch_operation_not_answered_yet_says_so(shared):
    # Alarms are answered (test_cloudwatch.py); dashboards are not.
    assert shared.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    with pytest.raises(ClientError) as e:
        shared.client("cloudwatch").list_dashboards()
    assert error_code(e) == "NotImplemented"
    assert "ListDashboards" in error_message(e)


# ELBv2: AWS Query.


def test_elbv2_describe_calls_over_boto3_and_the_cli(shared):
    elb = shared.client("elbv2")
    assert elb.describe_load_balancers()["LoadBalancers"] == []
    assert elb.describe_target_groups()["TargetGroups"] == []
    assert shared.aws("elbv2", "describe-load-balancers")["LoadBalancers"] == []
    assert shared.aws("elbv2", "describe-target-groups")["TargetGroups"] == []
    with pytest.raises(ClientError) as e:
        elb.describe_target_groups(Names=["nope"])
    assert error_code(e) == "TargetGroupNotFound"
    with pytest.raises(ClientError) as e:
        elb.describe_load_balancers(Names=["nope"])
    assert error_code(e) == "LoadBalancerNotFound"
    p = shared.aws("elbv2", "describe-target-groups", "--names", "nope", check=False)
    assert p.returncode != 0 and "TargetGroupNotFound" in p.stderr


def test_elbv2_validation_names_the_member_as_aws_does(shared):
    status, headers, body = raw(
        shared.endpoint,
        "/",
        b"Action=DescribeTargetGroups&Version=2015-12-01&PageSize=4000",
        signed_headers("elasticloadbalancing", {"Content-Type": "application/x-www-form-urlencoded"}),
    )
    assert status == 400 and headers["content-type"].startswith("text/xml")
    root, code, message = xml_error(body)
    assert (root, code) == ("ErrorResponse", "ValidationError")
    assert "Value '4000' at 'pageSize' failed to satisfy constraint" in message
    assert b"<Type>Sender</Type>" in body and b"<RequestId>" in body


# EC2's flavour of Query.


def test_ec2_filters_from_boto3_and_the_cli(shared):
    ec2 = shared.client("ec2")
    subnets = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": ["us-east-1?"]}])["Subnets"]
    assert len(subnets) == 3 and all(s["DefaultForAz"] for s in subnets)
    cli = shared.aws("ec2", "describe-subnets", "--filters", "Name=availability-zone,Values=us-east-1b")["Subnets"]
    assert [s["AvailabilityZone"] for s in cli] == ["us-east-1b"]
    vpcs = shared.aws("ec2", "describe-vpcs", "--filters", "Name=is-default,Values=true")["Vpcs"]
    assert vpcs[0]["IsDefault"] is True and vpcs[0]["CidrBlockAssociationSet"][0]["CidrBlockState"]["State"] == "associated"


def test_ec2_unknown_parameter_and_bad_filter(shared):
    status, _, body = raw(
        shared.endpoint,
        "/",
        b"Action=DescribeVpcs&Version=2016-11-15&Bogus=1",
        signed_headers("ec2", {"Content-Type": "application/x-www-form-urlencoded"}),
    )
    assert status == 400
    assert xml_error(body) == ("Response", "UnknownParameter", "The parameter Bogus is not recognized")
    with pytest.raises(ClientError) as e:
        shared.client("ec2").describe_vpcs(Filters=[{"Name": "bogus", "Values": ["x"]}])
    assert error_code(e) == "InvalidParameterValue"


# Malformed bodies get their own protocol's error shape.


def test_malformed_json_10_body(shared):
    status, headers, body = raw(
        shared.endpoint,
        "/",
        b"{not json",
        {"X-Amz-Target": f"{CW_TARGET}.ListMetrics", "Content-Type": "application/x-amz-json-1.0", "x-amzn-query-mode": "true"},
    )
    assert status == 400
    assert headers["content-type"] == "application/x-amz-json-1.0"
    assert json.loads(body)["__type"] == "SerializationException"


def test_malformed_cbor_body(shared):
    status, headers, body = raw(
        shared.endpoint,
        f"/service/{CW_TARGET}/operation/ListMetrics",
        b"\xbf\x61",
        {"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor", "Accept": "application/cbor"},
    )
    assert status == 400
    assert headers["content-type"] == "application/cbor" and headers["smithy-protocol"] == "rpc-v2-cbor"
    err = cbor2.loads(body)
    assert err["__type"] == "SerializationException" and "CBOR" in err["message"]
    # A member of the wrong type.
    status, headers, body = raw(
        shared.endpoint,
        f"/service/{CW_TARGET}/operation/ListMetrics",
        cbor2.dumps({"Namespace": 5}),
        {"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor"},
    )
    assert status == 400 and cbor2.loads(body)["__type"] == "SerializationException"
    # A good request answers CBOR.
    status, headers, body = raw(
        shared.endpoint,
        f"/service/{CW_TARGET}/operation/ListMetrics",
        cbor2.dumps({}),
        {"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor"},
    )
    assert status == 200 and cbor2.loads(body) == {"Metrics": []}


def test_malformed_query_requests(shared):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = raw(shared.endpoint, "/", b"Version=2015-12-01", signed_headers("elasticloadbalancing", form))
    assert status == 400 and xml_error(body)[1] == "MissingAction"
    status, _, body = raw(shared.endpoint, "/", b"Action=LaunchRockets&Version=2015-12-01", signed_headers("elasticloadbalancing", form))
    assert status == 400 and xml_error(body)[1] == "InvalidAction"
    status, _, body = raw(shared.endpoint, "/", b"Action=DescribeLoadBalancers&Version=2012-06-01", signed_headers("elasticloadbalancing", form))
    assert status == 400 and xml_error(body)[1] == "NoSuchVersion"
    status, _, body = raw(shared.endpoint, "/", b"Action=ListMetrics&Version=2010-08-01&Dimensions.member.1.Value=x", signed_headers("monitoring", form))
    # A dimension filter without its required Name.
    assert status == 400 and xml_error(body)[1] == "MissingParameter", body


# Routing.


def test_unsigned_requests_are_routed_by_target_and_version(shared):
    status, headers, body = raw(
        shared.endpoint, "/", b"{}", {"X-Amz-Target": f"{CW_TARGET}.ListMetrics", "Content-Type": "application/x-amz-json-1.0"}
    )
    assert status == 200 and json.loads(body) == {"Metrics": []}
    status, _, body = raw(
        shared.endpoint, "/", b"Action=DescribeTargetGroups&Version=2015-12-01", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 200 and b"<DescribeTargetGroupsResult>" in body
    status, _, body = raw(
        shared.endpoint, "/", b"Action=DescribeVpcs&Version=2016-11-15", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 200 and b"<vpcSet>" in body


def test_services_estiba_does_not_serve_are_named(shared):
    # Every service estiba has a model of is served (Application Auto Scaling was the last).
    assert shared.client("application-autoscaling").describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"] == []
    # STS answers GetCallerIdentity (tests/e2e/test_auth.py); SNS is not served.
    assert shared.client("sts").get_caller_identity()["Account"] == "000000000000"
    with pytest.raises(ClientError) as e:
        shared.client("sns").list_topics()
    assert error_code(e) == "InvalidAction" and "'sns'" in error_message(e)


def test_a_target_of_another_service_than_signed_for_is_refused(shared):
    status, _, body = raw(
        shared.endpoint,
        "/",
        b"{}",
        signed_headers("ecs", {"X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories", "Content-Type": "application/x-amz-json-1.1"}),
    )
    assert status == 400 and json.loads(body)["__type"] == "UnknownOperationException"


def test_get_root_is_the_console_page(shared):
    with urllib.request.urlopen(shared.endpoint + "/", timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
        page = r.read().decode()
    assert "Elastic Load Balancing" in page and "<code>monitoring</code>" in page


def get(endpoint, path, headers=None):
    req = urllib.request.Request(endpoint + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_the_console_files_are_served_with_types_and_etags(shared):
    status, h, page = get(shared.endpoint, "/")
    assert status == 200 and h["cache-control"] == "no-cache" and "default-src 'self'" in h["content-security-policy"]
    assert b'data-account="000000000000"' in page and b'data-region="us-east-1"' in page
    for path, ctype in [
        ("/_estiba/console/js/app.js", "text/javascript"),
        ("/_estiba/console/js/pages/clusters.js", "text/javascript"),
        ("/_estiba/console/style.css", "text/css"),
        ("/_estiba/console/favicon.svg", "image/svg+xml"),
    ]:
        status, h, body = get(shared.endpoint, path)
        assert status == 200 and h["content-type"].startswith(ctype) and body, path
        assert h["x-content-type-options"] == "nosniff"
        status, h2, body = get(shared.endpoint, path, {"If-None-Match": h["etag"]})
        assert status == 304 and body == b"" and h2["etag"] == h["etag"], path
    assert get(shared.endpoint, "/_estiba/console/js/nope.js")[0] == 404
    assert get(shared.endpoint, "/_estiba/console/../console.rs")[0] == 404


def test_the_console_shadows_no_api_route(shared):
    # The APIs keep `POST /`, the registry `/v2/`, health its paths.
    ecs = shared.client()
    assert "clusterArns" in ecs.list_clusters()
    status, _, body = raw(shared.endpoint, "/", b"{}", {"X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters", "Content-Type": "application/x-amz-json-1.1"})
    assert status == 200 and "clusterArns" in json.loads(body)
    status, h, _ = get(shared.endpoint, "/v2/")
    assert status in (200, 401) and "docker-distribution-api-version" in h
    assert get(shared.endpoint, "/health")[0] == 200
