"""AWS Secrets Manager (AWS JSON 1.1, target prefix secretsmanager): CreateSecret with string and
binary values, GetSecretValue by stage and version, PutSecretValue's AWSCURRENT / AWSPREVIOUS
moves, UpdateSecret, DeleteSecret with a recovery window or forced, RestoreSecret,
DescribeSecret, ListSecrets (filters, paging), ListSecretVersionIds and tags, with boto3 and
the AWS CLI, and the exception paths. Values are sealed at rest."""

import re
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, error_message, stored_state, unique


@pytest.fixture
def sm(shared):
    return shared.client("secretsmanager")


def test_create_get_and_arn(shared, sm):
    name = unique("db") + "/password"
    r = sm.create_secret(Name=name, SecretString='{"user":"admin","pass":"p@ss-very-secret"}',
                         Description="db creds", Tags=[{"Key": "team", "Value": "x"}])
    assert re.fullmatch(rf"arn:aws:secretsmanager:us-east-1:000000000000:secret:{re.escape(name)}-[A-Za-z0-9]{{6}}", r["ARN"])
    assert r["Name"] == name and r["VersionId"]
    for sid in [name, r["ARN"], r["ARN"][:-7]]:
        got = sm.get_secret_value(SecretId=sid)
        assert got["SecretString"] == '{"user":"admin","pass":"p@ss-very-secret"}'
        assert (got["ARN"], got["VersionId"], got["VersionStages"]) == (r["ARN"], r["VersionId"], ["AWSCURRENT"])
    d = sm.describe_secret(SecretId=name)
    assert (d["Name"], d["Description"], d["Tags"]) == (name, "db creds", [{"Key": "team", "Value": "x"}])
    assert d["VersionIdsToStages"] == {r["VersionId"]: ["AWSCURRENT"]}
    assert "SecretString" not in d
    blob = stored_state(shared)
    assert name.encode() in blob and b"p@ss-very-secret" not in blob

    with pytest.raises(ClientError) as e:
        sm.create_secret(Name=name, SecretString="again")
    assert error_code(e) == "ResourceExistsException"
    # A re-created name gets another ARN suffix.
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    r2 = sm.create_secret(Name=name, SecretString="new")
    assert r2["ARN"] != r["ARN"]
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=r["ARN"])
    assert error_code(e) == "ResourceNotFoundException"


def test_binary_and_errors(sm):
    name = unique("bin")
    sm.create_secret(Name=name, SecretBinary=b"\x00\x01\xffdata")
    got = sm.get_secret_value(SecretId=name)
    assert got["SecretBinary"] == b"\x00\x01\xffdata" and "SecretString" not in got
    with pytest.raises(ClientError) as e:
        sm.create_secret(Name=unique("both"), SecretString="a", SecretBinary=b"b")
    assert error_code(e) == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=unique("missing"))
    assert error_code(e) == "ResourceNotFoundException"
    assert error_message(e) == "Secrets Manager can't find the specified secret."
    with pytest.raises(ClientError) as e:
        sm.create_secret(Name="bad name!", SecretString="x")
    assert error_code(e) in ("InvalidParameterException", "ValidationException")
    empty = unique("empty")
    sm.create_secret(Name=empty)
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=empty)
    assert error_code(e) == "ResourceNotFoundException"
    assert "staging label: AWSCURRENT" in error_message(e)


def test_versions_and_stages(sm):
    name = unique("rot")
    v1 = sm.create_secret(Name=name, SecretString="one")["VersionId"]
    token = str(uuid.uuid4())
    r = sm.put_secret_value(SecretId=name, SecretString="two", ClientRequestToken=token)
    assert (r["VersionId"], r["VersionStages"]) == (token, ["AWSCURRENT"])
    # The same token with the same value is a no-op; with another value an error.
    assert sm.put_secret_value(SecretId=name, SecretString="two", ClientRequestToken=token)["VersionId"] == token
    with pytest.raises(ClientError) as e:
        sm.put_secret_value(SecretId=name, SecretString="other", ClientRequestToken=token)
    assert error_code(e) == "ResourceExistsException"
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "two"
    assert sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")["SecretString"] == "one"
    assert sm.get_secret_value(SecretId=name, VersionId=v1)["SecretString"] == "one"
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=name, VersionId=v1, VersionStage="AWSCURRENT")
    assert error_code(e) == "InvalidRequestException"
    pending = sm.put_secret_value(SecretId=name, SecretString="three", VersionStages=["AWSPENDING"])["VersionId"]
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "two"
    assert sm.get_secret_value(SecretId=name, VersionStage="AWSPENDING")["VersionId"] == pending
    u = sm.update_secret(SecretId=name, SecretString="four", Description="rotated")
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "four"
    stages = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
    assert stages[u["VersionId"]] == ["AWSCURRENT"] and stages[token] == ["AWSPREVIOUS"]
    assert stages[pending] == ["AWSPENDING"] and v1 not in stages
    ids = sm.list_secret_version_ids(SecretId=name)["Versions"]
    assert {v["VersionId"] for v in ids} == {u["VersionId"], token, pending}


def test_delete_restore(sm):
    name = unique("del")
    arn = sm.create_secret(Name=name, SecretString="x")["ARN"]
    with pytest.raises(ClientError) as e:
        sm.delete_secret(SecretId=name, RecoveryWindowInDays=6)
    assert error_code(e) == "InvalidParameterException"
    assert error_message(e) == "RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."
    with pytest.raises(ClientError) as e:
        sm.delete_secret(SecretId=name, RecoveryWindowInDays=7, ForceDeleteWithoutRecovery=True)
    assert error_code(e) == "InvalidParameterException"
    r = sm.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    assert r["ARN"] == arn and r["DeletionDate"]
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=name)
    assert error_code(e) == "InvalidRequestException"
    assert "marked for deletion" in error_message(e)
    with pytest.raises(ClientError) as e:
        sm.put_secret_value(SecretId=name, SecretString="y")
    assert error_code(e) == "InvalidRequestException"
    assert "DeletedDate" in sm.describe_secret(SecretId=name)
    listed = [s["Name"] for s in sm.list_secrets(Filters=[{"Key": "name", "Values": [name]}])["SecretList"]]
    assert listed == []
    listed = sm.list_secrets(Filters=[{"Key": "name", "Values": [name]}], IncludePlannedDeletion=True)["SecretList"]
    assert [s["Name"] for s in listed] == [name]
    sm.restore_secret(SecretId=name)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "x"
    sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    with pytest.raises(ClientError) as e:
        sm.describe_secret(SecretId=name)
    assert error_code(e) == "ResourceNotFoundException"


def test_list_filters_paging_and_tags(sm):
    prefix = unique("list")
    for i in range(5):
        sm.create_secret(Name=f"{prefix}/s{i}", SecretString="v", Description="even" if i % 2 == 0 else "odd",
                         Tags=[{"Key": "idx", "Value": str(i)}])
    pages = list(sm.get_paginator("list_secrets").paginate(
        Filters=[{"Key": "name", "Values": [prefix]}], PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3
    assert sorted(s["Name"] for p in pages for s in p["SecretList"]) == [f"{prefix}/s{i}" for i in range(5)]
    even = sm.list_secrets(Filters=[{"Key": "name", "Values": [prefix]}, {"Key": "description", "Values": ["even"]}])
    assert len(even["SecretList"]) == 3
    by_tag = sm.list_secrets(Filters=[{"Key": "name", "Values": [prefix]}, {"Key": "tag-value", "Values": ["4"]}])
    assert [s["Name"] for s in by_tag["SecretList"]] == [f"{prefix}/s4"]
    sm.tag_resource(SecretId=f"{prefix}/s0", Tags=[{"Key": "env", "Value": "prod"}])
    sm.untag_resource(SecretId=f"{prefix}/s0", TagKeys=["idx"])
    assert sm.describe_secret(SecretId=f"{prefix}/s0")["Tags"] == [{"Key": "env", "Value": "prod"}]


def test_aws_cli(shared):
    name = unique("cli")
    out = shared.aws("secretsmanager", "create-secret", "--name", name, "--secret-string", "cli-value")
    assert out["Name"] == name
    got = shared.aws("secretsmanager", "get-secret-value", "--secret-id", out["ARN"])
    assert got["SecretString"] == "cli-value"
    shared.aws("secretsmanager", "put-secret-value", "--secret-id", name, "--secret-string", "v2")
    prev = shared.aws("secretsmanager", "get-secret-value", "--secret-id", name, "--version-stage", "AWSPREVIOUS")
    assert prev["SecretString"] == "cli-value"
    d = shared.aws("secretsmanager", "delete-secret", "--secret-id", name, "--recovery-window-in-days", "7")
    assert d["Name"] == name
    p = shared.aws("secretsmanager", "get-secret-value", "--secret-id", name, check=False)
    assert p.returncode != 0 and "InvalidRequestException" in p.stderr
    shared.aws("secretsmanager", "restore-secret", "--secret-id", name)
    shared.aws("secretsmanager", "delete-secret", "--secret-id", name, "--force-delete-without-recovery")
