"""STS AssumeRole and the temporary credentials estiba issues (`--credentials` with `[role]`
sections): AWS's validation and AccessDenied messages, GetCallerIdentity for an assumed-role
session, calls with the temporary keys scoped by the role's policy and a session policy, keys
that verify on a second server sharing the secrets key, forged tokens, and expired keys refused
with ExpiredTokenException / ExpiredToken (a server with the test-only short lifetime).
Control plane only."""

import os
import shutil
import tempfile
import time

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import Estiba, error_code, error_message

A, B = "111111111111", "222222222222"

CREDENTIALS = f"""
[harness]
aws_access_key_id = test
aws_secret_access_key = test
account = {A}

[alice]
aws_access_key_id = AKIAALICE0000000001
aws_secret_access_key = alice-secret
account = {A}
policy = {{"Statement":[{{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"arn:aws:iam::{A}:role/app"}}]}}

[bob]
aws_access_key_id = AKIABOB00000000001
aws_secret_access_key = bob-secret
account = {B}

[role app]
account = {A}
policy = {{"Statement":[{{"Effect":"Allow","Action":["ecs:List*","ecs:Describe*","logs:*","sts:AssumeRole"],"Resource":"*"}}]}}

[role long]
account = {A}
max_session_duration = 7200
"""


def client(srv, service, key, secret, token=None):
    return boto3.client(service, endpoint_url=srv.endpoint, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, aws_session_token=token,
                        config=botocore.config.Config(retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def dirs():
    d = tempfile.mkdtemp(prefix="estiba-sts-")
    with open(os.path.join(d, "credentials"), "w") as f:
        f.write(CREDENTIALS)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def srv(dirs):
    key = os.path.join(dirs, "secrets.key")
    e = Estiba(os.path.join(dirs, "data"),
               extra_args=["--credentials", os.path.join(dirs, "credentials"), "--secrets-key-file", key]).start()
    yield e
    e.stop()


def sts_of(srv, key, secret, token=None):
    return client(srv, "sts", key, secret, token)


def assume(srv, role="app", session="s1", **kw):
    sts = sts_of(srv, "AKIAALICE0000000001", "alice-secret")
    return sts.assume_role(RoleArn=f"arn:aws:iam::{A}:role/{role}", RoleSessionName=session, **kw)


def test_assume_role_and_call_with_the_keys(srv):
    out = assume(srv)
    c = out["Credentials"]
    assert c["AccessKeyId"].startswith("ASIA") and len(c["AccessKeyId"]) == 20
    assert c["SecretAccessKey"] and c["SessionToken"]
    left = c["Expiration"].timestamp() - time.time()
    assert 3500 < left <= 3601, left
    user = out["AssumedRoleUser"]
    assert user["Arn"] == f"arn:aws:sts::{A}:assumed-role/app/s1"
    assert user["AssumedRoleId"].startswith("AROA") and user["AssumedRoleId"].endswith(":s1")
    args = (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    who = sts_of(srv, *args).get_caller_identity()
    assert (who["Arn"], who["Account"], who["UserId"]) == (user["Arn"], A, user["AssumedRoleId"])
    # The role's policy: ECS reads yes, writes no.
    ecs = client(srv, "ecs", *args)
    ecs.list_clusters()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.create_cluster(clusterName="nope")
    assert error_code(e) == "AccessDeniedException"
    assert error_message(e).startswith(f"User: arn:aws:sts::{A}:assumed-role/app/s1 is not authorized to perform: "
                                       "ecs:CreateCluster")
    # What the session does happens in the role's account.
    logs = client(srv, "logs", *args)
    logs.create_log_group(logGroupName="made-by-a-session")
    groups = client(srv, "logs", "test", "test").describe_log_groups(logGroupNamePrefix="made-by")["logGroups"]
    assert [g["logGroupName"] for g in groups] == ["made-by-a-session"]


def test_session_policy_narrows_the_role(srv):
    out = assume(srv, Policy='{"Statement":{"Effect":"Allow","Action":"logs:Describe*","Resource":"*"}}')
    assert out["PackedPolicySize"] >= 1
    c = out["Credentials"]
    args = (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    client(srv, "logs", *args).describe_log_groups()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(srv, "ecs", *args).list_clusters()
    assert error_code(e) == "AccessDeniedException"
    assert error_message(e).endswith("because no session policy allows the ecs:ListClusters action")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        assume(srv, Policy="{not json")
    assert error_code(e) == "MalformedPolicyDocument"


def test_refusals(srv):
    # Alice's policy allows the app role only.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        assume(srv, role="long")
    assert error_code(e) == "AccessDenied"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error_message(e) == (f"User: arn:aws:iam::{A}:user/alice is not authorized to perform: sts:AssumeRole "
                                f"on resource: arn:aws:iam::{A}:role/long")
    # Another account's role, however full the caller's access.
    bob = sts_of(srv, "AKIABOB00000000001", "bob-secret")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bob.assume_role(RoleArn=f"arn:aws:iam::{A}:role/app", RoleSessionName="x1")
    assert error_code(e) == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        assume(srv, session="a:b")
    assert error_code(e) == "ValidationError"
    assert error_message(e) == ("1 validation error detected: Value 'a:b' at 'roleSessionName' failed to satisfy "
                                "constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        assume(srv, DurationSeconds=7200)
    assert error_message(e) == "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
    # A role declared with a longer maximum allows it (the harness key has full access).
    sts = sts_of(srv, "test", "test")
    out = sts.assume_role(RoleArn=f"arn:aws:iam::{A}:role/long", RoleSessionName="long1", DurationSeconds=7200)
    assert out["Credentials"]["Expiration"].timestamp() - time.time() > 7000
    # Role chaining is limited to an hour.
    c = assume(srv)["Credentials"]
    chained = sts_of(srv, c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        chained.assume_role(RoleArn=f"arn:aws:iam::{A}:role/long", RoleSessionName="c1", DurationSeconds=3601)
    assert error_code(e) == "ValidationError"
    out = chained.assume_role(RoleArn=f"arn:aws:iam::{A}:role/long", RoleSessionName="c1")
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{A}:assumed-role/long/c1"


def test_session_policy_denies_one_resource(srv):
    """A session policy's Resource is evaluated against the resource the call names."""
    policy = ('{"Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"},'
              f'{{"Effect":"Deny","Action":"ecs:ListServices","Resource":"arn:aws:ecs:*:{A}:cluster/secret"}}]}}')
    c = assume(srv, Policy=policy)["Credentials"]
    ecs = client(srv, "ecs", c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.list_services(cluster="public")
    assert error_code(e) == "ClusterNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.list_services(cluster="secret")
    assert error_code(e) == "AccessDeniedException"
    assert error_message(e) == (f"User: arn:aws:sts::{A}:assumed-role/app/s1 is not authorized to perform: "
                                f"ecs:ListServices on resource: arn:aws:ecs:us-east-1:{A}:cluster/secret "
                                "with an explicit deny in a session policy")


def test_what_cannot_be_honoured_is_refused(srv):
    harness = sts_of(srv, "test", "test")
    # A role the credentials file does not declare does not exist.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        harness.assume_role(RoleArn=f"arn:aws:iam::{A}:role/ghost", RoleSessionName="g1")
    assert error_code(e) == "AccessDenied"
    assert error_message(e) == (f"User: arn:aws:iam::{A}:user/harness is not authorized to perform: sts:AssumeRole "
                                f"on resource: arn:aws:iam::{A}:role/ghost")
    # Managed session policies, MFA and session tags would be ignored: they are refused.
    for kw, what in [({"PolicyArns": [{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}]}, "PolicyArns"),
                     ({"SerialNumber": "arn:aws:iam::111111111111:mfa/x", "TokenCode": "123456"}, "SerialNumber"),
                     ({"Tags": [{"Key": "team", "Value": "a"}]}, "Tags")]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            assume(srv, **kw)
        assert error_code(e) == "ValidationError"
        assert error_message(e).startswith(f"estiba does not support {what}"), error_message(e)
    big = '{"Statement":[{"Effect":"Allow","Action":"logs:*","Resource":"*","Sid":"' + "x" * 2100 + '"}]}'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        assume(srv, Policy=big)
    assert error_code(e) == "ValidationError"
    assert "Member must have length less than or equal to 2048" in error_message(e)


def test_forged_and_foreign_tokens_are_unknown(srv, dirs):
    c = assume(srv)["Credentials"]
    forged = c["SessionToken"][:-4] + ("AAAA" if not c["SessionToken"].endswith("AAAA") else "BBBB")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(srv, "ecs", c["AccessKeyId"], c["SecretAccessKey"], forged).list_clusters()
    assert error_code(e) == "UnrecognizedClientException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sts_of(srv, c["AccessKeyId"], c["SecretAccessKey"]).get_caller_identity()
    assert error_code(e) == "InvalidClientTokenId"
    # A second server with the same secrets key accepts the keys (no store write per issue);
    # one with another key does not.
    twin = Estiba(os.path.join(dirs, "twin"), extra_args=[
        "--credentials", os.path.join(dirs, "credentials"), "--secrets-key-file", os.path.join(dirs, "secrets.key")]).start()
    other = Estiba(os.path.join(dirs, "other"), extra_args=["--credentials", os.path.join(dirs, "credentials")]).start()
    try:
        args = (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
        assert sts_of(twin, *args).get_caller_identity()["Arn"] == f"arn:aws:sts::{A}:assumed-role/app/s1"
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client(other, "ecs", *args).list_clusters()
        assert error_code(e) == "UnrecognizedClientException"
    finally:
        twin.stop()
        other.stop()


def test_expired_keys(dirs):
    short = Estiba(os.path.join(dirs, "short"), extra_args=["--credentials", os.path.join(dirs, "credentials")],
                   env={"ESTIBA_TEST_ONLY_SESSION_SECONDS": "2"}).start()
    try:
        c = assume(short)["Credentials"]
        args = (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
        client(short, "ecs", *args).list_clusters()
        time.sleep(2.5)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client(short, "ecs", *args).list_clusters()
        assert error_code(e) == "ExpiredTokenException"
        assert error_message(e) == "The security token included in the request is expired"
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sts_of(short, *args).get_caller_identity()
        assert error_code(e) == "ExpiredToken"
    finally:
        short.stop()
