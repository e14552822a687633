"""Container `secrets` reach a task's environment: an SSM SecureString (by name and by ARN) and
a Secrets Manager JSON key (`arn:...:secret:NAME-AbCdEf:key::`), resolved by the server when the
task starts; a missing parameter or secret fails the task with ECS's
`ResourceInitializationError` reason; `repositoryCredentials` read a Secrets Manager secret.

Needs root, and runs only inside a network namespace with no route out."""

import os
import subprocess

import pytest

from conftest import BIN, isolated, running_node, unique, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out"),
]

NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}
PREFIX = "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: "


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_node(tmp_path_factory, name="secrets") as e:
        yield e


def register(ecs, image, container):
    fam = unique("sec")
    container.setdefault("image", image)
    container.setdefault("name", "app")
    ecs.register_task_definition(family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256",
                                 memory="512", containerDefinitions=[container])
    return fam


def run_to_stop(ecs, fam):
    r = ecs.run_task(taskDefinition=fam, networkConfiguration=NET)
    assert r["failures"] == [], r["failures"]
    arn = r["tasks"][0]["taskArn"]
    return wait_until(lambda: (t := ecs.describe_tasks(tasks=[arn])["tasks"][0])["lastStatus"] == "STOPPED" and t,
                      timeout=90, what="task STOPPED")


def logs(node, arn):
    return subprocess.run([BIN, "logs", arn, "--data-dir", node.data_dir], capture_output=True, text=True,
                          timeout=30).stdout


def test_secrets_reach_the_environment(node, busybox):
    ecs, ssm, sm = node.client(), node.client("ssm"), node.client("secretsmanager")
    pname = f"/{unique('app')}/db-password"
    ssm.put_parameter(Name=pname, Value="from-ssm-secure", Type="SecureString")
    plain = unique("plain")
    ssm.put_parameter(Name=plain, Value="from-ssm-plain", Type="String")
    parn = ssm.get_parameter(Name=plain)["Parameter"]["ARN"]
    secret = sm.create_secret(Name=unique("db"), SecretString='{"username":"admin","password":"from-asm-json"}')
    fam = register(ecs, busybox, {
        "command": ["sh", "-c", "echo SSM=$DB_PASSWORD; echo PLAIN=$PLAIN; echo ASM=$ASM_PASSWORD; echo WHOLE=$WHOLE"],
        "secrets": [
            {"name": "DB_PASSWORD", "valueFrom": pname},
            {"name": "PLAIN", "valueFrom": parn},
            {"name": "ASM_PASSWORD", "valueFrom": secret["ARN"] + ":password::"},
            {"name": "WHOLE", "valueFrom": secret["ARN"]},
        ],
    })
    t = run_to_stop(ecs, fam)
    assert t["stopCode"] == "EssentialContainerExited", (t["stopCode"], t.get("stoppedReason"))
    out = logs(node, t["taskArn"])
    assert "SSM=from-ssm-secure" in out, out
    assert "PLAIN=from-ssm-plain" in out, out
    assert "ASM=from-asm-json" in out, out
    assert 'WHOLE={"username":"admin","password":"from-asm-json"}' in out, out
    # The values are in no API answer.
    described = ecs.describe_tasks(tasks=[t["taskArn"]])["tasks"][0]
    assert "from-ssm-secure" not in str(described)


def test_missing_ssm_parameters_fail_the_task(node, busybox):
    ecs = node.client()
    missing = [f"/{unique('nope')}/a", f"/{unique('nope')}/b"]
    fam = register(ecs, busybox, {"command": ["true"], "secrets": [
        {"name": "A", "valueFrom": missing[0]}, {"name": "B", "valueFrom": missing[1]}]})
    t = run_to_stop(ecs, fam)
    assert t["stopCode"] == "TaskFailedToStart"
    assert t["stoppedReason"] == (PREFIX + "unable to retrieve secrets from ssm: service call has been retried 1 "
                                  "time(s): invalid ssm parameters: " + ",".join(missing))


def test_missing_secret_and_json_key_fail_the_task(node, busybox):
    ecs, sm = node.client(), node.client("secretsmanager")
    gone = "arn:aws:secretsmanager:us-east-1:000000000000:secret:" + unique("gone") + "-AbCdEf"
    fam = register(ecs, busybox, {"command": ["true"], "secrets": [{"name": "S", "valueFrom": gone}]})
    t = run_to_stop(ecs, fam)
    assert t["stopCode"] == "TaskFailedToStart"
    assert t["stoppedReason"].startswith(PREFIX + "unable to retrieve secret from asm: "), t["stoppedReason"]
    assert f"failed to fetch secret {gone} from secrets manager: ResourceNotFoundException: " \
           "Secrets Manager can't find the specified secret." in t["stoppedReason"]

    arn = sm.create_secret(Name=unique("nokey"), SecretString='{"a":"b"}')["ARN"]
    fam = register(ecs, busybox, {"command": ["true"], "secrets": [{"name": "S", "valueFrom": arn + ":missing::"}]})
    t = run_to_stop(ecs, fam)
    assert t["stoppedReason"] == PREFIX + "unable to retrieve secret from asm: " \
                                          "retrieved secret from Secrets Manager did not contain json key missing"


def test_repository_credentials_read_secrets_manager(node, busybox):
    """A registry that needs no credentials accepts any: the task runs with the secret's
    credentials; a secret without username and password fails the task before the pull."""
    ecs, sm = node.client(), node.client("secretsmanager")
    good = sm.create_secret(Name=unique("reg"), SecretString='{"username":"u","password":"p"}')["ARN"]
    fam = register(ecs, busybox, {"command": ["echo", "pulled"], "repositoryCredentials": {"credentialsParameter": good}})
    t = run_to_stop(ecs, fam)
    assert t["stopCode"] == "EssentialContainerExited", t.get("stoppedReason")
    bad = sm.create_secret(Name=unique("reg"), SecretString='{"user":"u"}')["ARN"]
    fam = register(ecs, busybox, {"command": ["true"], "repositoryCredentials": {"credentialsParameter": bad}})
    t = run_to_stop(ecs, fam)
    assert t["stopCode"] == "TaskFailedToStart"
    assert t["stoppedReason"].startswith(PREFIX) and "username and password" in t["stoppedReason"]
