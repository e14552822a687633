"""Task role credentials: boto3 inside a task (the host's Python and boto3 in an image built
here) calls estiba's APIs with the credentials of its `taskRoleArn` and no configuration but
the endpoint: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` and the agent's endpoint at
169.254.170.2. The server verifies signatures (`--credentials`) and listens on every address
of the test's own network namespace, so the task reaches it through its gateway. A role whose
policy denies an action gets AccessDeniedException inside the task; another task cannot read
the first one's credentials.

Needs root, and runs only inside a network namespace with no route out."""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import BIN, Estiba, isolated, unique, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out"),
]

A = "111111111111"
NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}

CREDENTIALS = f"""
[harness]
aws_access_key_id = test
aws_secret_access_key = test
account = {A}

[role app]
account = {A}

[role nolog]
account = {A}
policy = {{"Statement":[{{"Effect":"Allow","Action":"*","Resource":"*"}},{{"Effect":"Deny","Action":"logs:CreateLogGroup","Resource":"*"}}]}}
"""

# Runs in the task: the server is at the task's gateway (its default route's), on PORT.
SDK = r"""
import json, os, socket, struct, sys
import boto3, botocore.exceptions
gw = next(socket.inet_ntoa(struct.pack("<L", int(l.split()[2], 16)))
          for l in open("/proc/net/route").readlines()[1:] if l.split()[1] == "00000000")
url = "http://%s:%s" % (gw, os.environ["PORT"])
out = {"uri": os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
       "static_keys": [k for k in os.environ if k.startswith("AWS_ACCESS_KEY") or k.startswith("AWS_SECRET")]}
s = boto3.session.Session(region_name="us-east-1")
out["method"] = s.get_credentials().method
out["arn"] = s.client("sts", endpoint_url=url).get_caller_identity()["Arn"]
out["clusters"] = len(s.client("ecs", endpoint_url=url).list_clusters()["clusterArns"])
try:
    s.client("logs", endpoint_url=url).create_log_group(logGroupName=os.environ["GROUP"])
    out["create"] = "ok"
except botocore.exceptions.ClientError as e:
    out["create"] = e.response["Error"]["Code"]
print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def python(registry):
    import images

    return images.python_image(registry.client, "python", "latest")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    d = tempfile.mkdtemp(prefix="estiba-roles-")
    creds = os.path.join(d, "credentials")
    with open(creds, "w") as f:
        f.write(CREDENTIALS)
    # Every address of this namespace (which has no route out): tasks reach it at their gateway.
    e = Estiba(str(tmp_path_factory.mktemp("roles")), extra_args=["--auth", "sigv4", "--credentials", creds],
               node=True, host="0.0.0.0")
    e.endpoint = f"http://127.0.0.1:{e.port}"
    e.start()
    try:
        yield e
    finally:
        e.drain()
        e.stop()
        shutil.rmtree(d, ignore_errors=True)


def output(node, arn, n=1):
    def lines():
        out = subprocess.run([BIN, "logs", arn, "--data-dir", node.data_dir], capture_output=True, text=True, timeout=30)
        got = out.stdout.splitlines()
        return len(got) >= n and got
    return wait_until(lines, timeout=90, interval=0.5, what=f"the output of {arn}")


def run_sdk(node, python, role, group):
    image, exe = python
    ecs = node.client()
    fam = unique("role")
    ecs.register_task_definition(
        family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        taskRoleArn=f"arn:aws:iam::{A}:role/{role}",
        containerDefinitions=[{"name": "app", "image": image,
                               "command": ["sh", "-c", f"{exe} -c \"$SDK\"; exec sleep 600"],
                               "environment": [{"name": "SDK", "value": SDK}, {"name": "PORT", "value": str(node.port)},
                                               {"name": "GROUP", "value": group}]}])
    arn = ecs.run_task(taskDefinition=fam, networkConfiguration=NET)["tasks"][0]["taskArn"]
    lines = output(node, arn)
    try:
        return arn, json.loads(lines[-1])
    except ValueError:
        pytest.fail(f"the task's output: {lines}")


def test_sdk_in_a_task_uses_its_task_role(node, python):
    group = unique("from-task")
    arn, got = run_sdk(node, python, "app", group)
    task_id = arn.rsplit("/", 1)[1]
    assert got["uri"].startswith("/v2/credentials/") and got["static_keys"] == []
    assert got["method"] == "container-role"
    assert got["arn"] == f"arn:aws:sts::{A}:assumed-role/app/{task_id}"
    assert got["create"] == "ok" and got["clusters"] >= 1
    # It happened in the role's account.
    logs = node.client("logs")
    assert [g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]] == [group]

    # Another task that knows the first one's credentials URI gets nothing; its own answers.
    ecs = node.client()
    nosy = ("sleep 1; wget -qO- http://169.254.170.2%s || echo refused; "
            "wget -qO- http://169.254.170.2/v1/credentials?id=%s || echo refused; "
            "wget -qO- http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI | grep -q '\"AccessKeyId\":\"ASIA' && echo own; "
            "wget -qO- http://169.254.170.2/v2/credentials/nothing-here || echo unknown; "
            "exec sleep 600") % (got["uri"], got["uri"].rsplit("/", 1)[1])
    fam = unique("nosy")
    ecs.register_task_definition(
        family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        taskRoleArn=f"arn:aws:iam::{A}:role/app",
        containerDefinitions=[{"name": "app", "image": python[0], "command": ["sh", "-c", nosy]}])
    other = ecs.run_task(taskDefinition=fam, networkConfiguration=NET)["tasks"][0]["taskArn"]
    assert output(node, other, 4)[:4] == ["refused", "refused", "own", "unknown"]
    ecs.stop_task(task=other)
    ecs.stop_task(task=arn)


def test_a_role_policy_denies_inside_the_task(node, python):
    group = unique("denied")
    arn, got = run_sdk(node, python, "nolog", group)
    assert got["arn"].startswith(f"arn:aws:sts::{A}:assumed-role/nolog/")
    assert got["create"] == "AccessDeniedException"
    assert node.client("logs").describe_log_groups(logGroupNamePrefix=group)["logGroups"] == []
    node.client().stop_task(task=arn)
