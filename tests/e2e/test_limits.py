"""Limits that keep one client from starving the others: a request rate per account, answered
with AWS's throttling error of each protocol (which SDKs retry), and a cap on open connections.
Control plane only."""

import socket
import time

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from conftest import Estiba

RATE = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("limits"))
    e = Estiba(d, extra_args=["--rate-limit", f"{RATE}:{RATE}", "--max-connections", "16"]).start()
    yield e
    e.stop()


def once(server, service):
    """A client of account 111111111111 that never retries."""
    return boto3.client(service, endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id="111111111111", aws_secret_access_key="test",
                        config=botocore.config.Config(retries={"total_max_attempts": 1}))


def burst(call, n=3 * RATE):
    """Makes `n` calls at once; returns the error codes of those refused."""
    codes = []
    for _ in range(n):
        try:
            call()
        except ClientError as e:
            codes.append((e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"],
                          e.response["Error"]["Message"]))
    return codes


def test_each_protocol_answers_a_throttled_request_as_aws_does(server):
    time.sleep(1.5)
    ecs = once(server, "ecs")
    codes = burst(ecs.list_clusters)
    assert codes and set(codes) == {("ThrottlingException", 400, "Rate exceeded")}, codes
    # Another account has its own budget.
    assert server.client(access_key="222222222222").list_clusters()["clusterArns"] == []
    time.sleep(1.5)
    elb = once(server, "elbv2")
    codes = burst(elb.describe_load_balancers)
    assert codes and set(codes) == {("Throttling", 400, "Rate exceeded")}, codes
    time.sleep(1.5)
    # CloudWatch speaks JSON but is query-compatible: SDKs read the Query code.
    cw = once(server, "cloudwatch")
    codes = burst(cw.list_metrics)
    assert codes and set(codes) == {("Throttling", 400, "Rate exceeded")}, codes
    time.sleep(1.5)
    ec2 = once(server, "ec2")
    codes = burst(ec2.describe_vpcs)
    assert codes and set(codes) == {("RequestLimitExceeded", 503, "Request limit exceeded.")}, codes


def test_sdks_retry_throttled_requests_until_they_pass(server):
    time.sleep(1.5)
    ecs = boto3.client("ecs", endpoint_url=server.endpoint, region_name="us-east-1",
                       aws_access_key_id="333333333333", aws_secret_access_key="test",
                       config=botocore.config.Config(retries={"mode": "standard", "max_attempts": 10}))
    started = time.monotonic()
    for _ in range(3 * RATE):
        ecs.list_clusters()
    # 15 requests at 5 a second after a burst of 5: about 2 s, never refused.
    assert time.monotonic() - started >= 1.5


def test_connections_past_the_cap_wait_until_one_closes(server):
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(16)]
    try:
        time.sleep(0.5)
        late = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        late.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        late.settimeout(1.0)
        with pytest.raises(socket.timeout):
            late.recv(100)
        idle.pop().close()
        late.settimeout(10)
        assert late.recv(100).startswith(b"HTTP/1.1 200"), "the waiting connection was not served"
        late.close()
    finally:
        for s in idle:
            s.close()
