"""Tasks: RunTask, StartTask, StopTask, DescribeTasks, ListTasks (no node runs them yet, so
they stay PROVISIONING)."""

import pytest
from botocore.exceptions import ClientError

from conftest import AWSVPC, error_code, error_message, register_fargate, unique


@pytest.fixture
def setup(ecs):
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    fam = unique("f")
    register_fargate(ecs, fam, tags=[{"key": "from", "value": "taskdef"}],
                     containers=[{"name": "app", "image": "busybox"}, {"name": "side", "image": "busybox", "essential": False}])
    return cluster, fam


def test_run_task_fargate(ecs, setup):
    cluster, fam = setup
    r = ecs.run_task(
        cluster=cluster, taskDefinition=fam, count=3, launchType="FARGATE", networkConfiguration=AWSVPC,
        startedBy="ci-job", group="batch", tags=[{"key": "own", "value": "1"}], propagateTags="TASK_DEFINITION",
        overrides={"containerOverrides": [{"name": "app", "command": ["sleep", "1"], "environment": [{"name": "X", "value": "y"}]}]},
    )
    assert r["failures"] == []
    assert len(r["tasks"]) == 3
    t = r["tasks"][0]
    assert t["lastStatus"] == "PROVISIONING"
    assert t["desiredStatus"] == "RUNNING"
    assert t["launchType"] == "FARGATE"
    assert t["platformVersion"] == "1.4.0"
    assert t["group"] == "batch"
    assert t["startedBy"] == "ci-job"
    assert (t["cpu"], t["memory"]) == ("256", "512")
    assert t["taskArn"].startswith(f"arn:aws:ecs:us-east-1:000000000000:task/{cluster}/")
    assert [c["name"] for c in t["containers"]] == ["app", "side"]
    assert t["containers"][0]["lastStatus"] == "PENDING"
    assert t["attachments"][0]["type"] == "ElasticNetworkInterface"
    assert {"key": "from", "value": "taskdef"} in t["tags"] and {"key": "own", "value": "1"} in t["tags"]
    o = t["overrides"]["containerOverrides"]
    assert o[0]["command"] == ["sleep", "1"] and o[1] == {"name": "side"}
    assert len({x["taskArn"] for x in r["tasks"]}) == 3


def test_run_task_errors(ecs, setup):
    cluster, fam = setup
    cases = [
        (dict(taskDefinition=fam), "InvalidParameterException", "Network Configuration must be provided when networkMode 'awsvpc' is specified."),
        (dict(taskDefinition=unique("none"), networkConfiguration=AWSVPC), "ClientException", "TaskDefinition not found."),
        (dict(taskDefinition=fam, count=11, networkConfiguration=AWSVPC), "InvalidParameterException", "between 1 and 10"),
        (dict(taskDefinition=fam, networkConfiguration=AWSVPC, launchType="FARGATE",
              capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}]), "InvalidParameterException",
         "Specifying both a launchType and capacityProviderStrategy is not supported."),
        (dict(taskDefinition=fam, networkConfiguration={"awsvpcConfiguration": {"subnets": []}}), "InvalidParameterException", "subnets can not be empty."),
        (dict(taskDefinition=fam, networkConfiguration=AWSVPC, overrides={"containerOverrides": [{"name": "ghost"}]}),
         "InvalidParameterException", "Override for container named ghost is not a container in the TaskDefinition."),
        (dict(taskDefinition=fam, networkConfiguration=AWSVPC, launchType="EC2"), "InvalidParameterException", "No Container Instances were found in your cluster."),
        (dict(taskDefinition=fam, networkConfiguration=AWSVPC, capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}]),
         "InvalidParameterException", "not associated with the cluster"),
    ]
    for kw, code, msg in cases:
        with pytest.raises(ClientError) as e:
            ecs.run_task(cluster=cluster, **kw)
        assert (error_code(e), msg in error_message(e)) == (code, True), (kw, error_message(e))
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=unique("ghost"), taskDefinition=fam, networkConfiguration=AWSVPC)
    assert error_code(e) == "ClusterNotFoundException"
    # Nothing was created by the failed calls.
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == []


def test_bridge_task_needs_ec2_capacity(ecs):
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    fam = unique("f")
    ecs.register_task_definition(family=fam, containerDefinitions=[{"name": "a", "image": "i", "memory": 64}])
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=cluster, taskDefinition=fam, networkConfiguration=AWSVPC)
    assert error_message(e) == "Network Configuration is not valid for the given networkMode of this task definition."
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=cluster, taskDefinition=fam, launchType="FARGATE")
    assert error_message(e) == "Task definition does not support launch_type FARGATE."
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=cluster, taskDefinition=fam)
    assert error_message(e) == "No Container Instances were found in your cluster."


def test_describe_and_list_tasks(ecs, setup):
    cluster, fam = setup
    tasks = ecs.run_task(cluster=cluster, taskDefinition=fam, count=2, networkConfiguration=AWSVPC, startedBy="me",
                         tags=[{"key": "a", "value": "b"}])["tasks"]
    other = ecs.run_task(cluster=cluster, taskDefinition=fam, networkConfiguration=AWSVPC)["tasks"][0]
    arns = [t["taskArn"] for t in tasks]
    ids = [a.rsplit("/", 1)[1] for a in arns]
    d = ecs.describe_tasks(cluster=cluster, tasks=[ids[0], arns[1], "nope"])
    assert [t["taskArn"] for t in d["tasks"]] == arns
    assert d["failures"] == [{"arn": f"arn:aws:ecs:us-east-1:000000000000:task/{cluster}/nope", "reason": "MISSING"}]
    assert "tags" not in d["tasks"][0]
    d = ecs.describe_tasks(cluster=cluster, tasks=[arns[0]], include=["TAGS"])
    assert {"key": "a", "value": "b"} in d["tasks"][0]["tags"]
    # The cluster comes from the task ARN when not given.
    assert ecs.describe_tasks(tasks=[arns[0]])["tasks"][0]["taskArn"] == arns[0]
    listed = ecs.list_tasks(cluster=cluster)["taskArns"]
    assert set(listed) == set(arns + [other["taskArn"]])
    assert set(ecs.list_tasks(cluster=cluster, startedBy="me")["taskArns"]) == set(arns)
    assert len(ecs.list_tasks(cluster=cluster, family=fam)["taskArns"]) == 3
    assert ecs.list_tasks(cluster=cluster, family=unique("other"))["taskArns"] == []
    assert len(ecs.list_tasks(cluster=cluster, launchType="FARGATE")["taskArns"]) == 3
    assert ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"] == []
    p = ecs.list_tasks(cluster=cluster, maxResults=2)
    assert len(p["taskArns"]) == 2 and "nextToken" in p
    assert len(ecs.list_tasks(cluster=cluster, nextToken=p["nextToken"])["taskArns"]) == 1
    with pytest.raises(ClientError) as e:
        ecs.list_tasks(cluster=unique("ghost"))
    assert error_code(e) == "ClusterNotFoundException"


def test_stop_task(shared, setup):
    ecs = shared.client()
    cluster, fam = setup
    t = ecs.run_task(cluster=cluster, taskDefinition=fam, networkConfiguration=AWSVPC)["tasks"][0]
    s = shared.aws("ecs", "stop-task", "--cluster", cluster, "--task", t["taskArn"], "--reason", "done here")["task"]
    assert s["desiredStatus"] == "STOPPED"
    assert s["stoppedReason"] == "done here"
    assert s["stopCode"] == "UserInitiated"
    # A task no node has taken stops at once.
    assert s["lastStatus"] == "STOPPED"
    assert "stoppedAt" in s
    assert ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"] == [t["taskArn"]]
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == []
    again = ecs.stop_task(cluster=cluster, task=t["taskArn"], reason="twice")["task"]
    assert again["stoppedReason"] == "done here"
    with pytest.raises(ClientError) as e:
        ecs.stop_task(cluster=cluster, task="0123456789abcdef0123456789abcdef")
    assert (error_code(e), error_message(e)) == ("InvalidParameterException", "The referenced task was not found.")


def test_start_task_on_a_container_instance(ecs):
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    ci = ecs.register_container_instance(
        cluster=cluster,
        totalResources=[{"name": "CPU", "type": "INTEGER", "integerValue": 1024}, {"name": "MEMORY", "type": "INTEGER", "integerValue": 512}],
    )["containerInstance"]
    fam = unique("f")
    ecs.register_task_definition(
        family=fam,
        containerDefinitions=[{"name": "a", "image": "i", "memory": 300, "cpu": 128, "portMappings": [{"containerPort": 80, "hostPort": 8080}]}],
    )
    r = ecs.start_task(cluster=cluster, taskDefinition=fam, containerInstances=[ci["containerInstanceArn"]])
    assert r["failures"] == []
    t = r["tasks"][0]
    assert t["containerInstanceArn"] == ci["containerInstanceArn"]
    assert t["launchType"] == "EC2"
    assert t["lastStatus"] == "PENDING"
    # Its memory and host port are now taken.
    r = ecs.start_task(cluster=cluster, taskDefinition=fam, containerInstances=[ci["containerInstanceArn"]])
    assert r["tasks"] == []
    assert r["failures"][0]["reason"] == "RESOURCE:MEMORY"
    r = ecs.run_task(cluster=cluster, taskDefinition=fam)
    assert r["tasks"] == [] and r["failures"][0]["reason"] == "RESOURCE:MEMORY"
    d = ecs.describe_container_instances(cluster=cluster, containerInstances=[ci["containerInstanceArn"]])["containerInstances"][0]
    assert d["pendingTasksCount"] == 1
    remaining = {r["name"]: r for r in d["remainingResources"]}
    assert remaining["MEMORY"]["integerValue"] == 212
    assert "8080" in remaining["PORTS"]["stringSetValue"]
    assert ecs.list_tasks(cluster=cluster, containerInstance=ci["containerInstanceArn"])["taskArns"] == [t["taskArn"]]


def test_platform_version_belongs_to_fargate(ecs, setup):
    cluster, _ = setup
    fam = unique("ec2")
    ecs.register_task_definition(family=fam, containerDefinitions=[{"name": "a", "image": "busybox", "memory": 64}])
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=cluster, taskDefinition=fam, launchType="EC2", platformVersion="1.4.0")
    assert (error_code(e), error_message(e)) == (
        "InvalidParameterException", "The platform version must be null when specifying an EC2 launch type.")
    with pytest.raises(ClientError) as e:
        ecs.create_service(cluster=cluster, serviceName=unique("s"), taskDefinition=fam, desiredCount=1,
                           launchType="EC2", platformVersion="LATEST")
    assert error_code(e) == "InvalidParameterException"


def test_a_task_is_in_its_subnets_zone(shared, setup):
    ecs = shared.client()
    cluster, fam = setup
    subnets = shared.client("ec2").describe_subnets()["Subnets"]
    zone_b = next(s for s in subnets if s["AvailabilityZone"] == "us-east-1b")
    net = {"awsvpcConfiguration": {"subnets": [zone_b["SubnetId"]], "securityGroups": ["sg-12345678"]}}
    t = ecs.run_task(cluster=cluster, taskDefinition=fam, launchType="FARGATE", networkConfiguration=net)["tasks"][0]
    assert t["availabilityZone"] == "us-east-1b"
    details = {d["name"]: d["value"] for d in t["attachments"][0]["details"]}
    assert details["subnetId"] == zone_b["SubnetId"]
