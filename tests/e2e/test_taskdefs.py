"""Task definitions: register, describe, deregister, list, list families, delete."""

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, error_message, register_fargate, unique


def test_register_with_the_cli_and_string_sizes(shared):
    fam = unique("web")
    td = shared.aws(
        "ecs", "register-task-definition", "--family", fam, "--network-mode", "awsvpc",
        "--requires-compatibilities", "FARGATE", "--cpu", "1 vCPU", "--memory", "2 GB",
        "--task-role-arn", "arn:aws:iam::000000000000:role/task",
        "--execution-role-arn", "arn:aws:iam::000000000000:role/exec",
        "--container-definitions",
        '[{"name":"api","image":"public.ecr.aws/nginx/nginx:latest","portMappings":[{"containerPort":80,"protocol":"tcp"}],'
        '"cpu":256,"memory":512,"environment":[{"name":"A","value":"1"}],"command":["nginx","-g","daemon off;"],'
        '"healthCheck":{"command":["CMD-SHELL","wget -q -O- localhost || exit 1"]},'
        '"dependsOn":[{"containerName":"init","condition":"SUCCESS"}]},'
        '{"name":"init","image":"busybox","essential":false,"command":["true"]}]',
        "--tags", "key=app,value=web",
    )
    t = td["taskDefinition"]
    assert t["taskDefinitionArn"] == f"arn:aws:ecs:us-east-1:000000000000:task-definition/{fam}:1"
    assert (t["cpu"], t["memory"]) == ("1024", "2048")
    assert t["compatibilities"] == ["EC2", "FARGATE"]
    assert t["status"] == "ACTIVE"
    api = t["containerDefinitions"][0]
    assert api["portMappings"] == [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}]
    assert api["healthCheck"] == {"command": ["CMD-SHELL", "wget -q -O- localhost || exit 1"], "interval": 30, "timeout": 5, "retries": 3}
    assert api["essential"] is True
    assert td["tags"] == [{"key": "app", "value": "web"}]
    names = {a["name"] for a in t["requiresAttributes"]}
    assert {"ecs.capability.task-eni", "ecs.capability.container-health-check", "ecs.capability.container-ordering"} <= names
    # A second registration is revision 2.
    t2 = register_fargate(shared.client(), fam)
    assert t2["revision"] == 2


def test_describe_by_family_revision_and_arn(ecs):
    fam = unique("f")
    t1 = register_fargate(ecs, fam)
    t2 = register_fargate(ecs, fam, tags=[{"key": "k", "value": "v"}])
    assert ecs.describe_task_definition(taskDefinition=fam)["taskDefinition"]["revision"] == 2
    assert ecs.describe_task_definition(taskDefinition=f"{fam}:1")["taskDefinition"]["revision"] == 1
    d = ecs.describe_task_definition(taskDefinition=t2["taskDefinitionArn"], include=["TAGS"])
    assert d["tags"] == [{"key": "k", "value": "v"}]
    assert "tags" not in ecs.describe_task_definition(taskDefinition=t2["taskDefinitionArn"])
    for bad in [unique("none"), f"{fam}:9", "bad name", f"{fam}:x"]:
        with pytest.raises(ClientError) as e:
            ecs.describe_task_definition(taskDefinition=bad)
        assert error_code(e) == "ClientException"
        assert error_message(e) == "Unable to describe task definition."
    # The bare family means the latest ACTIVE revision.
    ecs.deregister_task_definition(taskDefinition=f"{fam}:2")
    assert ecs.describe_task_definition(taskDefinition=fam)["taskDefinition"]["revision"] == t1["revision"]


@pytest.mark.parametrize(
    "kw,code,msg",
    [
        (dict(cpu="256", memory="4096"), "ClientException", "No Fargate configuration exists for given values: 256 CPU, 4096 memory."),
        (dict(cpu="3 vCPU", memory="8 GB"), "ClientException", "No Fargate configuration exists for given values: 3072 CPU, 8192 memory."),
        (dict(networkMode="bridge"), "ClientException", "Fargate only supports network mode"),
        (dict(cpu=None), "ClientException", "Fargate requires that 'cpu' be defined at the task level."),
        (dict(cpu="lots"), "ClientException", "Invalid 'cpu' setting for task."),
    ],
)
def test_fargate_validation(ecs, kw, code, msg):
    args = dict(family=unique("f"), networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
                containerDefinitions=[{"name": "a", "image": "busybox"}])
    args.update(kw)
    args = {k: v for k, v in args.items() if v is not None}
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(**args)
    assert error_code(e) == code
    assert msg in error_message(e)
    assert ecs.list_task_definitions(familyPrefix=args["family"])["taskDefinitionArns"] == []


@pytest.mark.parametrize(
    "containers,msg",
    [
        ([], "Container list cannot be empty."),
        ([{"name": "a", "image": "i", "memory": 64}, {"name": "a", "image": "i", "memory": 64}], "Duplicate container name found: a."),
        ([{"name": "a", "memory": 64}], "Container.image should not be null or empty."),
        ([{"image": "i", "memory": 64}], "Container.name should not be null or empty."),
        ([{"name": "a", "image": "i"}], "At least one of 'memory' or 'memoryReservation' must be specified."),
        ([{"name": "a", "image": "i", "memory": 64, "essential": False}], "at least one essential container"),
        ([{"name": "a", "image": "i", "memory": 64, "memoryReservation": 128}], "'memoryReservation' must be less than or equal to 'memory'"),
        ([{"name": "a", "image": "i", "memory": 64, "dependsOn": [{"containerName": "b", "condition": "START"}]}], "which is not defined"),
        ([{"name": "a", "image": "i", "memory": 64, "portMappings": [{"containerPort": 80, "hostPort": 80}]},
          {"name": "b", "image": "i", "memory": 64, "portMappings": [{"containerPort": 81, "hostPort": 80}]}], "Host port 80/tcp is used by more than one"),
        ([{"name": "a", "image": "i", "memory": 64, "healthCheck": {"command": ["true"]}}], "must start with CMD or CMD-SHELL"),
        ([{"name": "a", "image": "i", "memory": 64, "healthCheck": {"command": ["CMD", "true"], "interval": 1}}], "'interval' must be between 5 and 300"),
    ],
)
def test_container_validation(ecs, containers, msg):
    fam = unique("f")
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(family=fam, containerDefinitions=containers)
    assert error_code(e) == "ClientException"
    assert msg in error_message(e)
    assert ecs.list_task_definition_families(familyPrefix=fam)["families"] == []


def test_awsvpc_port_rules(ecs):
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(
            family=unique("f"), networkMode="awsvpc",
            containerDefinitions=[{"name": "a", "image": "i", "memory": 64, "portMappings": [{"containerPort": 80, "hostPort": 8080}]}],
        )
    assert error_message(e) == "When networkMode=awsvpc, the host ports and container ports in port mappings must match."


def test_deregister_list_and_delete(ecs):
    fam = unique("f")
    for _ in range(3):
        register_fargate(ecs, fam)
    arns = ecs.list_task_definitions(familyPrefix=fam)["taskDefinitionArns"]
    assert [a.rsplit(":", 1)[1] for a in arns] == ["1", "2", "3"]
    desc = ecs.list_task_definitions(familyPrefix=fam, sort="DESC")["taskDefinitionArns"]
    assert desc == list(reversed(arns))
    with pytest.raises(ClientError) as e:
        ecs.deregister_task_definition(taskDefinition=fam)
    assert error_code(e) == "ClientException"
    with pytest.raises(ClientError) as e:
        ecs.deregister_task_definition(taskDefinition=f"{fam}:latest")
    assert (error_code(e), error_message(e)) == ("InvalidParameterException", "Invalid revision number. Number: latest")
    with pytest.raises(ClientError) as e:
        ecs.deregister_task_definition(taskDefinition=f"{fam}:9")
    assert (error_code(e), error_message(e)) == ("ClientException", "Unable to describe task definition.")
    td = ecs.deregister_task_definition(taskDefinition=f"{fam}:2")["taskDefinition"]
    assert td["status"] == "INACTIVE" and "deregisteredAt" in td
    assert ecs.list_task_definitions(familyPrefix=fam, status="INACTIVE")["taskDefinitionArns"] == [arns[1]]
    assert arns[1] not in ecs.list_task_definitions(familyPrefix=fam)["taskDefinitionArns"]
    r = ecs.delete_task_definitions(taskDefinitions=[f"{fam}:1", f"{fam}:2", f"{fam}:99"])
    assert [t["status"] for t in r["taskDefinitions"]] == ["DELETE_IN_PROGRESS"]
    assert {f["arn"] for f in r["failures"]} == {f"{fam}:1", f"{fam}:99"}
    assert "ACTIVE" in [f["reason"] for f in r["failures"] if f["arn"] == f"{fam}:1"][0]
    # Revisions are never reused.
    assert register_fargate(ecs, fam)["revision"] == 4


def test_list_families(ecs):
    base = unique("fam")
    for suffix in ["a", "b", "c"]:
        register_fargate(ecs, f"{base}-{suffix}")
    ecs.deregister_task_definition(taskDefinition=f"{base}-b:1")
    assert ecs.list_task_definition_families(familyPrefix=base)["families"] == [f"{base}-a", f"{base}-c"]
    assert ecs.list_task_definition_families(familyPrefix=base, status="INACTIVE")["families"] == [f"{base}-b"]
    assert len(ecs.list_task_definition_families(familyPrefix=base, status="ALL")["families"]) == 3
    page = ecs.list_task_definition_families(familyPrefix=base, status="ALL", maxResults=2)
    assert page["families"] == [f"{base}-a", f"{base}-b"] and page["nextToken"]
    rest = ecs.list_task_definition_families(familyPrefix=base, status="ALL", nextToken=page["nextToken"])
    assert rest["families"] == [f"{base}-c"]


def test_registering_launches_nothing(ecs):
    register_fargate(ecs, unique("f"))
    c = ecs.describe_clusters(clusters=["default"])
    if c["clusters"]:
        assert c["clusters"][0]["runningTasksCount"] == 0


def test_efs_volumes_get_a_root_directory(ecs):
    td = ecs.register_task_definition(
        family=unique("efs"),
        containerDefinitions=[{"name": "a", "image": "busybox", "memory": 64}],
        volumes=[{"name": "data", "efsVolumeConfiguration": {"fileSystemId": "fs-12345678"}}],
    )["taskDefinition"]
    assert td["volumes"][0]["efsVolumeConfiguration"] == {"fileSystemId": "fs-12345678", "rootDirectory": "/"}


def test_fargate_refuses_host_pid_and_ipc_modes(ecs):
    base = dict(family=unique("f"), networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
                containerDefinitions=[{"name": "a", "image": "busybox"}])
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(pidMode="host", **base)
    assert error_message(e) == "Tasks using the Fargate launch type do not support pidMode 'host'. The supported value for pidMode is 'task'."
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(ipcMode="task", **base)
    assert error_code(e) == "ClientException"
    assert ecs.register_task_definition(pidMode="task", **base)["taskDefinition"]["pidMode"] == "task"


def test_environment_files_need_the_servers_directory(ecs):
    """Issue 14.6: without --environment-files-dir a path could name any host file: refused."""
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(family=unique("f"), containerDefinitions=[
            {"name": "a", "image": "busybox", "memory": 64, "environmentFiles": [{"value": "arn:aws:s3:::b/a.env", "type": "s3"}]}])
    assert error_code(e) == "ClientException"
    assert "--environment-files-dir" in error_message(e)
