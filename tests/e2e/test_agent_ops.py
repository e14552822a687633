"""ECS's agent-facing operations (DiscoverPollEndpoint, SubmitTaskStateChange,
SubmitContainerStateChange, SubmitAttachmentStateChanges, UpdateContainerAgent), called as an
agent that speaks ECS's API would. Control plane only: no node runs the tasks, so what the
calls report is all that moves them."""

import json

import pytest
from botocore.exceptions import ClientError

from conftest import AWSVPC, error_code, error_message, register_fargate, unique

RES = [{"name": "CPU", "type": "INTEGER", "integerValue": 2048}, {"name": "MEMORY", "type": "INTEGER", "integerValue": 4096}]


def a_task(ecs, cluster):
    family = unique("f")
    register_fargate(ecs, family)
    return ecs.run_task(cluster=cluster, taskDefinition=family, launchType="FARGATE",
                        networkConfiguration=AWSVPC)["tasks"][0]


def test_discover_poll_endpoint_names_this_server(shared):
    ecs = shared.client()
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    r = ecs.discover_poll_endpoint(cluster=cluster)
    assert r["endpoint"] == f"http://127.0.0.1:{shared.port}/"
    assert r["telemetryEndpoint"] == r["endpoint"] and r["serviceConnectEndpoint"] == r["endpoint"]
    with pytest.raises(ClientError) as e:
        ecs.discover_poll_endpoint(cluster=cluster, containerInstance="nope")
    assert error_code(e) == "InvalidParameterException"


def test_task_and_container_state_changes_move_the_task_forward_only(shared):
    ecs = shared.client()
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    t = a_task(ecs, cluster)
    arn = t["taskArn"]
    r = ecs.submit_task_state_change(
        cluster=cluster, task=arn, status="RUNNING", pullStartedAt=1_700_000_000, pullStoppedAt=1_700_000_001,
        containers=[{"containerName": "app", "runtimeId": "rt-1", "status": "RUNNING",
                     "networkBindings": [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}]}])
    assert r["acknowledgment"] == "ACK"
    got = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
    assert got["lastStatus"] == "RUNNING"
    c = got["containers"][0]
    assert c["lastStatus"] == "RUNNING" and c["runtimeId"] == "rt-1"
    # A late PENDING does not move it back.
    ecs.submit_task_state_change(cluster=cluster, task=arn, status="PENDING")
    assert ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]["lastStatus"] == "RUNNING"
    # The container exits, then the task stops with the agent's reason.
    ecs.submit_container_state_change(cluster=cluster, task=arn, containerName="app", status="STOPPED", exitCode=3,
                                      reason="it ended")
    got = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
    assert got["containers"][0]["lastStatus"] == "STOPPED" and got["containers"][0]["exitCode"] == 3
    ecs.submit_task_state_change(cluster=cluster, task=arn, status="STOPPED", reason="Essential container in task exited")
    got = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
    assert got["lastStatus"] == "STOPPED" and got["stoppedReason"] == "Essential container in task exited"
    assert got["stopCode"] == "EssentialContainerExited" and "stoppedAt" in got


def test_state_changes_refuse_what_does_not_exist(shared):
    ecs = shared.client()
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    arn = a_task(ecs, cluster)["taskArn"]
    cases = [
        dict(task=arn, status="FLYING"),
        dict(task=arn.rsplit("/", 1)[0] + "/00000000000000000000000000000000", status="RUNNING"),
        dict(task=arn, status="RUNNING", containers=[{"containerName": "ghost", "status": "RUNNING"}]),
    ]
    for kw in cases:
        with pytest.raises(ClientError) as e:
            ecs.submit_task_state_change(cluster=cluster, **kw)
        assert error_code(e) == "InvalidParameterException", kw
    # Nothing was written by the refused calls.
    assert ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]["lastStatus"] == "PROVISIONING"
    with pytest.raises(ClientError) as e:
        ecs.submit_container_state_change(cluster=cluster, task=arn, containerName="app", status="DANCING")
    assert error_code(e) == "InvalidParameterException"


def test_attachment_state_changes(shared):
    ecs = shared.client()
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    t = a_task(ecs, cluster)
    eni = t["attachments"][0]
    att_arn = f"arn:aws:ecs:us-east-1:000000000000:attachment/{eni['id']}"
    r = ecs.submit_attachment_state_changes(cluster=cluster, attachments=[{"attachmentArn": att_arn, "status": "ATTACHED"}])
    assert r["acknowledgment"] == "ACK"
    got = ecs.describe_tasks(cluster=cluster, tasks=[t["taskArn"]])["tasks"][0]
    assert got["attachments"][0]["status"] == "ATTACHED"
    with pytest.raises(ClientError) as e:
        ecs.submit_attachment_state_changes(cluster=cluster, attachments=[
            {"attachmentArn": "arn:aws:ecs:us-east-1:000000000000:attachment/nope", "status": "ATTACHED"}])
    assert error_code(e) == "InvalidParameterException"


def test_update_container_agent_has_nothing_to_update(shared):
    ecs = shared.client()
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    doc = json.dumps({"instanceId": "i-0abc", "availabilityZone": "us-east-1a"})
    with_version = ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=doc, totalResources=RES,
                                                   versionInfo={"agentVersion": "1.80.0"})["containerInstance"]
    without = ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=json.dumps({"instanceId": "i-0abd"}),
                                              totalResources=RES)["containerInstance"]
    with pytest.raises(ClientError) as e:
        ecs.update_container_agent(cluster=cluster, containerInstance=with_version["containerInstanceArn"])
    assert error_code(e) == "NoUpdateAvailableException"
    with pytest.raises(ClientError) as e:
        ecs.update_container_agent(cluster=cluster, containerInstance=without["containerInstanceArn"])
    assert error_code(e) == "MissingVersionException"
    with pytest.raises(ClientError) as e:
        ecs.update_container_agent(cluster=cluster, containerInstance="0123456789abcdef")
    assert error_code(e) == "InvalidParameterException"
    assert "not found" in error_message(e)
