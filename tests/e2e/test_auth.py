"""Verified requests (`--credentials`): SigV4 with boto3 and the AWS CLI, the error codes of
each protocol family for unsigned, wrongly signed, unknown-key, skewed and expired-token
requests, presigned STS GetCallerIdentity, accounts that never see each other's resources,
read-only keys and a policy that denies one action, and the registry's token. Control plane
only."""

import base64
import datetime
import json
import os
import shutil
import tempfile
import time
import unittest.mock
import urllib.error
import urllib.request

import boto3
import botocore
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import pytest

from conftest import Estiba, wait_until

A, B = "111111111111", "222222222222"

CREDENTIALS = f"""
# test keys
[alice]
aws_access_key_id = AKIAALICE0000000001
aws_secret_access_key = alice/secret+key
account = {A}

[bob]
aws_access_key_id = AKIABOB00000000001
aws_secret_access_key = bob-secret
account = {B}

[reader]
aws_access_key_id = AKIAREADER00000001
aws_secret_access_key = reader-secret
account = {A}
access = read-only

[carol]
aws_access_key_id = AKIACAROL000000001
aws_secret_access_key = carol-secret
account = {A}
policy_file = carol.json

[dave]
aws_access_key_id = AKIADAVE0000000001
aws_secret_access_key = dave-secret
account = {A}
policy = {{"Statement":[{{"Effect":"Allow","Action":"ecs:*","Resource":"*"}},{{"Effect":"Allow","Action":"iam:PassRole","Resource":"arn:aws:iam::{A}:role/app"}}]}}

[old]
aws_access_key_id = ASIAOLD00000000001
aws_secret_access_key = old-secret
aws_session_token = old-token
expiration = 2020-01-01T00:00:00Z
account = {A}
"""

CAROL_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": ["ecs:DeleteCluster", "ec2:DescribeSubnets"], "Resource": "*"},
        {"Effect": "Deny", "Action": "ecs:DescribeClusters", "Resource": f"arn:aws:ecs:us-east-1:{A}:cluster/hidden"},
    ],
}

KEYS = {
    "alice": ("AKIAALICE0000000001", "alice/secret+key", None),
    "bob": ("AKIABOB00000000001", "bob-secret", None),
    "reader": ("AKIAREADER00000001", "reader-secret", None),
    "carol": ("AKIACAROL000000001", "carol-secret", None),
    "dave": ("AKIADAVE0000000001", "dave-secret", None),
    "old": ("ASIAOLD00000000001", "old-secret", "old-token"),
    "stranger": ("AKIANOBODY00000001", "whatever", None),
    "alice-wrong-secret": ("AKIAALICE0000000001", "not-alice-secret", None),
}


@pytest.fixture(scope="module")
def srv():
    d = tempfile.mkdtemp(prefix="estiba-auth-")
    creds = os.path.join(d, "credentials")
    with open(creds, "w") as f:
        f.write(CREDENTIALS)
    with open(os.path.join(d, "carol.json"), "w") as f:
        json.dump(CAROL_POLICY, f)
    e = Estiba(os.path.join(d, "data"), extra_args=["--credentials", creds]).start()
    e.credentials_file = creds
    yield e
    e.stop()
    shutil.rmtree(d, ignore_errors=True)


def client(srv, service, who="alice", region="us-east-1"):
    ak, sk, token = KEYS[who]
    return boto3.client(
        service,
        endpoint_url=srv.endpoint,
        region_name=region,
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        aws_session_token=token,
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )


def error_of(call, *args, **kwargs):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(*args, **kwargs)
    r = e.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["Error"].get("Message", "")


def raw(srv, body, headers, path="/", method="POST"):
    """Sends a request as given; returns (status, body text)."""
    req = urllib.request.Request(srv.endpoint + path, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


ECS_LIST = (b"{}", {"Content-Type": "application/x-amz-json-1.1",
                    "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters"})
STS_CALLER = (b"Action=GetCallerIdentity&Version=2011-06-15",
              {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
EC2_VPCS = (b"Action=DescribeVpcs&Version=2016-11-15",
            {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})


def test_signed_requests_work(srv):
    ecs = client(srv, "ecs")
    arn = ecs.create_cluster(clusterName="alice-works")["cluster"]["clusterArn"]
    assert arn == f"arn:aws:ecs:us-east-1:{A}:cluster/alice-works"
    assert arn in ecs.list_clusters()["clusterArns"]
    me = client(srv, "sts").get_caller_identity()
    assert (me["Account"], me["Arn"]) == (A, f"arn:aws:iam::{A}:user/alice")
    assert me["UserId"].startswith("AIDA")
    assert client(srv, "elbv2").describe_load_balancers()["LoadBalancers"] == []
    assert client(srv, "ec2").describe_vpcs()["Vpcs"]
    assert client(srv, "logs").describe_log_groups()["logGroups"] == []
    ecs.delete_cluster(cluster="alice-works")


def test_unsigned_requests_are_refused(srv):
    status, body = raw(srv, *ECS_LIST)
    assert status == 400 and json.loads(body)["__type"] == "MissingAuthenticationTokenException", body
    status, body = raw(srv, *STS_CALLER)
    assert status == 403 and "<Code>MissingAuthenticationToken</Code>" in body, body
    status, body = raw(srv, *EC2_VPCS)
    assert status == 403 and "<Code>MissingAuthenticationToken</Code>" in body and "<Response><Errors>" in body, body
    # boto3 told not to sign.
    unsigned = boto3.client("ecs", endpoint_url=srv.endpoint, region_name="us-east-1",
                            config=botocore.config.Config(signature_version=botocore.UNSIGNED,
                                                          retries={"max_attempts": 1}))
    assert error_of(unsigned.list_clusters)[:2] == ("MissingAuthenticationTokenException", 400)


def test_wrong_secret(srv):
    who = "alice-wrong-secret"
    code, status, msg = error_of(client(srv, "ecs", who).list_clusters)
    assert (code, status) == ("InvalidSignatureException", 400)
    assert msg.startswith("The request signature we calculated does not match the signature you provided.")
    assert error_of(client(srv, "sts", who).get_caller_identity)[:2] == ("SignatureDoesNotMatch", 403)
    assert error_of(client(srv, "elbv2", who).describe_load_balancers)[:2] == ("SignatureDoesNotMatch", 403)
    assert error_of(client(srv, "ec2", who).describe_vpcs)[:2] == ("SignatureDoesNotMatch", 403)


def test_unknown_key(srv):
    code, status, msg = error_of(client(srv, "ecs", "stranger").list_clusters)
    assert (code, status, msg) == ("UnrecognizedClientException", 400,
                                   "The security token included in the request is invalid.")
    assert error_of(client(srv, "sts", "stranger").get_caller_identity)[:2] == ("InvalidClientTokenId", 403)
    assert error_of(client(srv, "ec2", "stranger").describe_vpcs)[:2] == ("AuthFailure", 401)
    assert error_of(client(srv, "logs", "stranger").describe_log_groups)[:2] == ("UnrecognizedClientException", 400)


def skewed(minutes):
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(minutes=minutes)
    return unittest.mock.patch("botocore.auth.get_current_datetime", return_value=now)


def test_skewed_clock(srv):
    with skewed(-20):
        code, status, msg = error_of(client(srv, "ecs").list_clusters)
        assert (code, status) == ("InvalidSignatureException", 400)
        assert msg.startswith("Signature expired: ") and msg.endswith(" - 15 min.)"), msg
        code, status, msg = error_of(client(srv, "sts").get_caller_identity)
        assert (code, status) == ("SignatureDoesNotMatch", 403) and msg.startswith("Signature expired"), msg
        assert error_of(client(srv, "ec2").describe_vpcs)[:3] == ("RequestExpired", 400, "Request has expired.")
    with skewed(+20):
        code, status, msg = error_of(client(srv, "ecs").list_clusters)
        assert (code, status) == ("InvalidSignatureException", 400)
        assert msg.startswith("Signature not yet current: ") and msg.endswith(" + 15 min.)"), msg
    with skewed(-10):
        client(srv, "ecs").list_clusters()


def test_hand_signed_request_with_crafted_date(srv):
    """Signed with botocore's SigV4Auth directly, then the date header altered: the
    signature no longer matches."""
    ak, sk, _ = KEYS["alice"]
    body, headers = ECS_LIST
    req = botocore.awsrequest.AWSRequest(method="POST", url=srv.endpoint + "/", data=body, headers=dict(headers))
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ak, sk), "ecs", "us-east-1").add_auth(req)
    prepared = dict(req.headers.items())
    status, text = raw(srv, body, prepared)
    assert status == 200, text
    d = datetime.datetime.strptime(prepared["X-Amz-Date"], "%Y%m%dT%H%M%SZ") + datetime.timedelta(seconds=1)
    prepared["X-Amz-Date"] = d.strftime("%Y%m%dT%H%M%SZ")
    status, text = raw(srv, body, prepared)
    assert status == 400 and json.loads(text)["__type"] == "InvalidSignatureException", text
    # A changed body is caught too.
    req = botocore.awsrequest.AWSRequest(method="POST", url=srv.endpoint + "/", data=body, headers=dict(headers))
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ak, sk), "ecs", "us-east-1").add_auth(req)
    status, text = raw(srv, b'{"maxResults": 1}', dict(req.headers.items()))
    assert status == 400 and json.loads(text)["__type"] == "InvalidSignatureException", text


def test_expired_temporary_credentials(srv):
    code, status, msg = error_of(client(srv, "ecs", "old").list_clusters)
    assert (code, status, msg) == ("ExpiredTokenException", 400, "The security token included in the request is expired")
    assert error_of(client(srv, "sts", "old").get_caller_identity)[:2] == ("ExpiredToken", 403)


def test_presigned_get_caller_identity(srv):
    # boto3 presigns the POST form (as AWS, estiba refuses it sent as GET); the Go SDK and
    # aws-iam-authenticator presign GET.
    url = client(srv, "sts").generate_presigned_url("get_caller_identity", ExpiresIn=60)
    assert "X-Amz-Signature=" in url
    ak, sk, _ = KEYS["alice"]
    req = botocore.awsrequest.AWSRequest(method="GET", url=srv.endpoint + "/?Action=GetCallerIdentity&Version=2011-06-15")
    botocore.auth.SigV4QueryAuth(botocore.credentials.Credentials(ak, sk), "sts", "us-east-1", expires=60).add_auth(req)
    get_url = req.url
    for method, u in [("POST", url), ("GET", get_url)]:
        status, body = raw(srv, b"" if method == "POST" else None, {}, path=u[len(srv.endpoint):], method=method)
        assert status == 200, (method, body)
        assert f"<Account>{A}</Account>" in body and f"<Arn>arn:aws:iam::{A}:user/alice</Arn>" in body
    status, body = raw(srv, None, {}, path=url[len(srv.endpoint):], method="GET")
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body, body
    tampered = get_url.replace("Version=2011-06-15", "Version=2011-06-15&Extra=1")
    status, body = raw(srv, None, {}, path=tampered[len(srv.endpoint):], method="GET")
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body, body


def test_accounts_do_not_see_each_other(srv):
    alice, bob = client(srv, "ecs", "alice"), client(srv, "ecs", "bob")
    a = alice.create_cluster(clusterName="only-alice")["cluster"]["clusterArn"]
    b = bob.create_cluster(clusterName="only-bob")["cluster"]["clusterArn"]
    assert b == f"arn:aws:ecs:us-east-1:{B}:cluster/only-bob"
    assert a not in bob.list_clusters()["clusterArns"] and b not in alice.list_clusters()["clusterArns"]
    failures = bob.describe_clusters(clusters=["only-alice", a])["failures"]
    assert [f["reason"] for f in failures] == ["MISSING", "MISSING"]
    # The same name in both accounts is two clusters.
    bob.create_cluster(clusterName="only-alice")
    assert alice.describe_clusters(clusters=["only-alice"])["clusters"][0]["clusterArn"] == a

    ecr_a, ecr_b = client(srv, "ecr", "alice"), client(srv, "ecr", "bob")
    ecr_a.create_repository(repositoryName="alice-app")
    assert [r["repositoryName"] for r in ecr_b.describe_repositories()["repositories"]] == []
    assert error_of(ecr_b.describe_repositories, repositoryNames=["alice-app"])[0] == "RepositoryNotFoundException"

    logs_a, logs_b = client(srv, "logs", "alice"), client(srv, "logs", "bob")
    logs_a.create_log_group(logGroupName="/alice/app")
    assert logs_b.describe_log_groups()["logGroups"] == []
    assert [g["logGroupName"] for g in logs_a.describe_log_groups()["logGroups"]] == ["/alice/app"]
    assert client(srv, "sts", "bob").get_caller_identity()["Account"] == B


def test_read_only_key(srv):
    client(srv, "ecs", "alice").create_cluster(clusterName="seen-by-reader")
    reader = client(srv, "ecs", "reader")
    assert f"arn:aws:ecs:us-east-1:{A}:cluster/seen-by-reader" in reader.list_clusters()["clusterArns"]
    assert reader.describe_clusters(clusters=["seen-by-reader"])["clusters"][0]["status"] == "ACTIVE"
    code, status, msg = error_of(reader.create_cluster, clusterName="nope")
    assert (code, status) == ("AccessDeniedException", 400)
    assert msg == (f"User: arn:aws:iam::{A}:user/reader is not authorized to perform: ecs:CreateCluster on resource: * "
                   "because no identity-based policy allows the ecs:CreateCluster action")
    assert "nope" not in str(reader.list_clusters()["clusterArns"])
    code, status, _ = error_of(client(srv, "elbv2", "reader").create_target_group, Name="tg", Protocol="HTTP",
                               Port=80, VpcId="vpc-1")
    assert (code, status) == ("AccessDenied", 403)
    code, status, _ = error_of(client(srv, "logs", "reader").create_log_group, logGroupName="/nope")
    assert (code, status) == ("AccessDeniedException", 400)


def test_policy_denies_one_action(srv):
    carol = client(srv, "ecs", "carol")
    carol.create_cluster(clusterName="carols")
    code, status, msg = error_of(carol.delete_cluster, cluster="carols")
    assert (code, status) == ("AccessDeniedException", 400)
    assert msg == (f"User: arn:aws:iam::{A}:user/carol is not authorized to perform: ecs:DeleteCluster on resource: "
                   f"arn:aws:ecs:us-east-1:{A}:cluster/carols with an explicit deny in an identity-based policy")
    assert carol.describe_clusters(clusters=["carols"])["clusters"][0]["status"] == "ACTIVE"
    # Each cluster a DescribeClusters names is a resource of the call.
    code, status, msg = error_of(carol.describe_clusters, clusters=["carols", "hidden"])
    assert (code, status) == ("AccessDeniedException", 400)
    assert msg == (f"User: arn:aws:iam::{A}:user/carol is not authorized to perform: ecs:DescribeClusters on resource: "
                   f"arn:aws:ecs:us-east-1:{A}:cluster/hidden with an explicit deny in an identity-based policy")
    ec2 = client(srv, "ec2", "carol")
    assert ec2.describe_vpcs()["Vpcs"]
    assert error_of(ec2.describe_subnets)[:3] == ("UnauthorizedOperation", 403,
                                                 "You are not authorized to perform this operation.")
    client(srv, "ecs", "alice").delete_cluster(cluster="carols")


def test_passing_a_role_needs_iam_pass_role(srv):
    """A key that may call ECS hands it only the roles its policy lets it pass: in task
    definitions, RunTask overrides, and the definitions tasks and services will run."""
    dave, alice = client(srv, "ecs", "dave"), client(srv, "ecs", "alice")
    app, admin = f"arn:aws:iam::{A}:role/app", f"arn:aws:iam::{A}:role/admin"
    containers = [{"name": "c", "image": "busybox", "memory": 64}]
    dave.register_task_definition(family="pass-ok", taskRoleArn=app, containerDefinitions=containers)

    def refused(call, **kw):
        code, status, msg = error_of(call, **kw)
        assert (code, status) == ("AccessDeniedException", 400), (code, msg)
        assert msg == (f"User: arn:aws:iam::{A}:user/dave is not authorized to perform: iam:PassRole on resource: "
                       f"{admin} because no identity-based policy allows the iam:PassRole action")

    refused(dave.register_task_definition, family="pass-no", taskRoleArn=app, executionRoleArn="admin",
            containerDefinitions=containers)
    assert error_of(dave.describe_task_definition, taskDefinition="pass-no")[0] == "ClientException"
    # A definition someone else registered with a role dave may not pass.
    alice.register_task_definition(family="pass-admin", taskRoleArn=admin, containerDefinitions=containers)
    dave.create_cluster(clusterName="pass")
    try:
        refused(dave.run_task, cluster="pass", taskDefinition="pass-admin")
        refused(dave.run_task, cluster="pass", taskDefinition="pass-ok", overrides={"taskRoleArn": admin})
        refused(dave.create_service, cluster="pass", serviceName="s", taskDefinition="pass-admin", desiredCount=0)
        # dave's own roles pass; full access passes any role.
        dave.create_service(cluster="pass", serviceName="s", taskDefinition="pass-ok", desiredCount=0)
        refused(dave.update_service, cluster="pass", service="s", taskDefinition="pass-admin")
        alice.update_service(cluster="pass", service="s", taskDefinition="pass-admin")
    finally:
        alice.delete_service(cluster="pass", service="s", force=True)
        # A DRAINING service still holds its cluster (ClusterContainsServicesException).
        wait_until(lambda: alice.describe_services(cluster="pass", services=["s"])["services"][0]["status"] == "INACTIVE",
                   timeout=30, what="service INACTIVE")
        alice.delete_cluster(cluster="pass")


def test_aws_cli(srv):
    def cli(who, *args):
        ak, sk, _ = KEYS[who]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ak, AWS_SECRET_ACCESS_KEY=sk, AWS_DEFAULT_REGION="us-east-1",
                   AWS_PAGER="", AWS_MAX_ATTEMPTS="1")
        env.pop("AWS_SESSION_TOKEN", None)
        import subprocess
        from conftest import AWS_CLI
        return subprocess.run([AWS_CLI, "--endpoint-url", srv.endpoint, "--output", "json", *args],
                              capture_output=True, text=True, env=env, timeout=120)

    p = cli("alice", "sts", "get-caller-identity")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["Account"] == A
    p = cli("bob", "ecs", "list-clusters")
    assert p.returncode == 0, p.stderr
    assert all(f":{B}:" in arn for arn in json.loads(p.stdout)["clusterArns"])
    p = cli("alice-wrong-secret", "ecs", "list-clusters")
    assert p.returncode != 0 and "InvalidSignatureException" in p.stderr, p.stderr
    p = cli("stranger", "sts", "get-caller-identity")
    assert p.returncode != 0 and "InvalidClientTokenId" in p.stderr, p.stderr
    p = cli("reader", "ecs", "create-cluster", "--cluster-name", "x")
    assert p.returncode != 0 and "AccessDeniedException" in p.stderr, p.stderr


def test_registry_needs_a_token(srv):
    status, _ = raw(srv, None, {}, path="/v2/", method="GET")
    assert status == 401
    token = client(srv, "ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _ = base64.b64decode(token).decode().split(":", 1)
    assert user == "AWS"
    status, body = raw(srv, None, {"Authorization": f"Basic {token}"}, path="/v2/", method="GET")
    assert status == 200, body


def test_credentials_file_is_read_again(srv):
    ak, sk = "AKIALATE0000000001", "late-secret"
    KEYS["late"] = (ak, sk, None)
    assert error_of(client(srv, "sts", "late").get_caller_identity)[0] == "InvalidClientTokenId"
    time.sleep(1.1)
    with open(srv.credentials_file, "a") as f:
        f.write(f"\n[late]\naws_access_key_id = {ak}\naws_secret_access_key = {sk}\naccount = {B}\n")
    deadline = time.time() + 5
    while True:
        try:
            assert client(srv, "sts", "late").get_caller_identity()["Arn"] == f"arn:aws:iam::{B}:user/late"
            break
        except botocore.exceptions.ClientError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_off_loopback_without_credentials_refuses_to_start(tmp_path):
    import subprocess
    from conftest import BIN
    p = subprocess.run([BIN, "server", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path), "--local-node", "off"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "--credentials" in p.stderr, p.stderr
