"""SSM Parameter Store (AWS JSON 1.1, target prefix AmazonSSM): PutParameter with the three
types, versions, labels, history, GetParameter(s) with selectors and ARNs,
GetParametersByPath, DescribeParameters, deletes and tags, with boto3 and the AWS CLI, and
the exception paths. SecureString values are sealed at rest: the store file never holds them."""

import os

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, error_message, stored_state, unique


@pytest.fixture
def ssm(shared):
    return shared.client("ssm")


def test_put_get_versions_and_types(ssm):
    name = f"/{unique('app')}/db/url"
    r = ssm.put_parameter(Name=name, Value="v1", Type="String")
    assert (r["Version"], r["Tier"]) == (1, "Standard")
    p = ssm.get_parameter(Name=name)["Parameter"]
    assert (p["Name"], p["Type"], p["Value"], p["Version"], p["DataType"]) == (name, "String", "v1", 1, "text")
    assert p["ARN"] == f"arn:aws:ssm:us-east-1:000000000000:parameter{name}"

    with pytest.raises(ClientError) as e:
        ssm.put_parameter(Name=name, Value="v2", Type="String")
    assert error_code(e) == "ParameterAlreadyExists"
    assert "set the overwrite option in the request to true" in error_message(e)

    r = ssm.put_parameter(Name=name, Value="v2", Overwrite=True)
    assert (r["Version"], r["Tier"]) == (2, "Standard")
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == "v2"
    assert ssm.get_parameter(Name=f"{name}:1")["Parameter"]["Value"] == "v1"
    assert ssm.get_parameter(Name=f"{name}:1")["Parameter"]["Selector"] == ":1"
    arn = p["ARN"]
    assert ssm.get_parameter(Name=arn)["Parameter"]["Value"] == "v2"
    with pytest.raises(ClientError) as e:
        ssm.get_parameter(Name=f"{name}:9")
    assert error_code(e) == "ParameterVersionNotFound"
    assert error_message(e) == f"Systems Manager could not find version 9 of {name}. Verify the version and try again."

    lst = f"/{unique('app')}/hosts"
    ssm.put_parameter(Name=lst, Value="a,b,c", Type="StringList")
    assert ssm.get_parameter(Name=lst)["Parameter"]["Type"] == "StringList"


def test_secure_string_is_sealed(shared, ssm):
    name = f"/{unique('sec')}/password"
    ssm.put_parameter(Name=name, Value="hunter2-secret-value", Type="SecureString", Description="db")
    p = ssm.get_parameter(Name=name)["Parameter"]
    assert p["Type"] == "SecureString"
    assert p["Value"] != "hunter2-secret-value"
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "hunter2-secret-value"
    meta = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    assert [(m["Name"], m["KeyId"], m["Description"]) for m in meta] == [(name, "alias/aws/ssm", "db")]
    # At rest: the store's files hold the parameter, never its value.
    blob = stored_state(shared)
    assert name.encode() in blob
    assert b"hunter2-secret-value" not in blob
    key = os.path.join(shared.data_dir, "secrets.key")
    assert os.stat(key).st_mode & 0o777 == 0o600


def test_get_parameters_and_by_path(ssm):
    root = f"/{unique('tree')}"
    for n, v in [("a", "1"), ("b", "2"), ("sub/c", "3"), ("sub/deep/d", "4")]:
        ssm.put_parameter(Name=f"{root}/{n}", Value=v, Type="String")
    r = ssm.get_parameters(Names=[f"{root}/a", f"{root}/nope", f"{root}/b:1"])
    assert sorted(p["Name"] for p in r["Parameters"]) == [f"{root}/a", f"{root}/b"]
    assert r["InvalidParameters"] == [f"{root}/nope"]

    one = ssm.get_parameters_by_path(Path=root)["Parameters"]
    assert sorted(p["Name"] for p in one) == [f"{root}/a", f"{root}/b"]
    pages = ssm.get_paginator("get_parameters_by_path").paginate(
        Path=root, Recursive=True, PaginationConfig={"PageSize": 2})
    names = [p["Name"] for page in pages for p in page["Parameters"]]
    assert sorted(names) == sorted(f"{root}/{n}" for n in ["a", "b", "sub/c", "sub/deep/d"])
    with pytest.raises(ClientError) as e:
        ssm.get_parameters_by_path(Path="no-slash")
    assert error_code(e) == "ValidationException"


def test_labels_and_history(ssm):
    name = f"/{unique('lab')}/x"
    for v in ["one", "two", "three"]:
        ssm.put_parameter(Name=name, Value=v, Type="String", Overwrite=True)
    r = ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["prod", "1bad", "awsx"])
    assert (r["ParameterVersion"], sorted(r["InvalidLabels"])) == (1, ["1bad", "awsx"])
    assert ssm.get_parameter(Name=f"{name}:prod")["Parameter"]["Value"] == "one"
    # A label moves to the version it is put on.
    ssm.label_parameter_version(Name=name, ParameterVersion=2, Labels=["prod"])
    assert ssm.get_parameter(Name=f"{name}:prod")["Parameter"]["Value"] == "two"
    hist = ssm.get_parameter_history(Name=name)["Parameters"]
    assert [(h["Version"], h["Value"], h["Labels"]) for h in hist] == [(1, "one", []), (2, "two", ["prod"]), (3, "three", [])]
    with pytest.raises(ClientError) as e:
        ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=[f"l{i}" for i in range(11)])
    assert error_code(e) in ("ParameterVersionLabelLimitExceeded", "ValidationException")
    with pytest.raises(ClientError) as e:
        ssm.label_parameter_version(Name=name, ParameterVersion=7, Labels=["x"])
    assert error_code(e) == "ParameterVersionNotFound"
    with pytest.raises(ClientError) as e:
        ssm.get_parameter(Name=f"{name}:nolabel")
    assert error_code(e) == "ParameterNotFound"


def test_validation_and_not_found(ssm):
    for bad in ["aws-thing", "/ssm/x", "a b", "no/leading/slash"]:
        with pytest.raises(ClientError) as e:
            ssm.put_parameter(Name=bad, Value="v", Type="String")
        assert error_code(e) == "ValidationException", bad
    with pytest.raises(ClientError) as e:
        ssm.put_parameter(Name="/" + "/".join(["l"] * 16), Value="v", Type="String")
    assert error_code(e) == "HierarchyLevelLimitExceededException"
    with pytest.raises(ClientError) as e:
        ssm.put_parameter(Name=f"/{unique('n')}", Value="v")
    assert error_code(e) == "ValidationException"
    assert "type is required" in error_message(e)
    with pytest.raises(ClientError) as e:
        ssm.put_parameter(Name=f"/{unique('n')}", Value="x" * 4097, Type="String")
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        ssm.put_parameter(Name=f"/{unique('n')}", Value="v", Type="String", Overwrite=True,
                          Tags=[{"Key": "k", "Value": "v"}])
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        ssm.put_parameter(Name=f"/{unique('n')}", Value="abc", Type="String", AllowedPattern="^[0-9]+$")
    assert error_code(e) == "ParameterPatternMismatchException"
    with pytest.raises(ClientError) as e:
        ssm.get_parameter(Name=f"/{unique('missing')}")
    assert error_code(e) == "ParameterNotFound"
    with pytest.raises(ClientError) as e:
        ssm.delete_parameter(Name=f"/{unique('missing')}")
    assert error_code(e) == "ParameterNotFound"


def test_delete_describe_and_tags(ssm):
    root = f"/{unique('del')}"
    ssm.put_parameter(Name=f"{root}/a", Value="1", Type="String", Tags=[{"Key": "team", "Value": "x"}])
    ssm.put_parameter(Name=f"{root}/b", Value="2", Type="SecureString")
    ssm.put_parameter(Name=f"{root}/c", Value="3", Type="String")
    tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=f"{root}/a")["TagList"]
    assert tags == [{"Key": "team", "Value": "x"}]
    ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=f"{root}/a", Tags=[{"Key": "env", "Value": "p"}])
    ssm.remove_tags_from_resource(ResourceType="Parameter", ResourceId=f"{root}/a", TagKeys=["team"])
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=f"{root}/a")["TagList"] == [
        {"Key": "env", "Value": "p"}]
    with pytest.raises(ClientError) as e:
        ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=f"{root}/none")
    assert error_code(e) == "InvalidResourceId"

    by_type = ssm.describe_parameters(ParameterFilters=[
        {"Key": "Path", "Option": "OneLevel", "Values": [root]}, {"Key": "Type", "Values": ["SecureString"]}])
    assert [p["Name"] for p in by_type["Parameters"]] == [f"{root}/b"]
    legacy = ssm.describe_parameters(Filters=[{"Key": "Name", "Values": [f"{root}/"]}])["Parameters"]
    assert sorted(p["Name"] for p in legacy) == [f"{root}/a", f"{root}/b", f"{root}/c"]
    pages = list(ssm.get_paginator("describe_parameters").paginate(
        ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": [root]}], PaginationConfig={"PageSize": 1}))
    assert sum(len(p["Parameters"]) for p in pages) == 3 and len(pages) >= 3
    with pytest.raises(ClientError) as e:
        ssm.describe_parameters(ParameterFilters=[{"Key": "Label", "Values": ["x"]}])
    assert error_code(e) == "InvalidFilterKey"

    r = ssm.delete_parameters(Names=[f"{root}/a", f"{root}/nope"])
    assert (r["DeletedParameters"], r["InvalidParameters"]) == ([f"{root}/a"], [f"{root}/nope"])
    ssm.delete_parameter(Name=f"{root}/b")
    assert [p["Name"] for p in ssm.get_parameters_by_path(Path=root)["Parameters"]] == [f"{root}/c"]


def test_regions_and_accounts_are_apart(shared):
    name = f"/{unique('scope')}"
    shared.client("ssm").put_parameter(Name=name, Value="here", Type="String")
    with pytest.raises(ClientError) as e:
        shared.client("ssm", region="eu-west-1").get_parameter(Name=name)
    assert error_code(e) == "ParameterNotFound"


def test_aws_cli(shared):
    name = f"/{unique('cli')}/token"
    out = shared.aws("ssm", "put-parameter", "--name", name, "--value", "s3cr3t", "--type", "SecureString")
    assert out["Version"] == 1
    got = shared.aws("ssm", "get-parameter", "--name", name, "--with-decryption")
    assert got["Parameter"]["Value"] == "s3cr3t"
    listed = shared.aws("ssm", "get-parameters-by-path", "--path", name.rsplit("/", 1)[0], "--with-decryption")
    assert [p["Value"] for p in listed["Parameters"]] == ["s3cr3t"]
    p = shared.aws("ssm", "get-parameter", "--name", f"/{unique('none')}", check=False)
    assert p.returncode != 0 and "ParameterNotFound" in p.stderr
    shared.aws("ssm", "delete-parameter", "--name", name)
