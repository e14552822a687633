"""ECS managed daemons: daemon task definitions, daemons, their revisions and deployments,
one task per container instance of the daemon's Managed Instances capacity providers."""

import os
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, error_message, isolated, running_node, unique, wait_until

ACCOUNT = "000000000000"
PREFIX = f"arn:aws:ecs:us-east-1:{ACCOUNT}"
RES = [{"name": "CPU", "type": "INTEGER", "integerValue": 4096}, {"name": "MEMORY", "type": "INTEGER", "integerValue": 8192}]
MI = {
    "infrastructureRoleArn": f"arn:aws:iam::{ACCOUNT}:role/infra",
    "instanceLaunchTemplate": {
        "ec2InstanceProfileArn": f"arn:aws:iam::{ACCOUNT}:instance-profile/p",
        "networkConfiguration": {"subnets": ["subnet-12345678"]},
    },
}
# A container that runs until told to stop, and stops at once when told.
SERVE = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]


def register_dtd(ecs, family, image="busybox", **kw):
    c = {"name": "agent", "image": image, "memory": 32, "command": SERVE, "stopTimeout": 2}
    return ecs.register_daemon_task_definition(family=family, containerDefinitions=[c], **kw)["daemonTaskDefinitionArn"]


def mi_cluster(ecs, cluster=None):
    """A cluster with a Managed Instances capacity provider associated: (cluster, provider)."""
    cluster = cluster or unique("c")
    cp = unique("mi")
    ecs.create_cluster(clusterName=cluster)
    ecs.create_capacity_provider(name=cp, managedInstancesProvider=MI)
    ecs.put_cluster_capacity_providers(cluster=cluster, capacityProviders=[cp], defaultCapacityProviderStrategy=[])
    return cluster, cp


def daemon_tasks(ecs, cluster, name, status="RUNNING"):
    arns = ecs.list_tasks(cluster=cluster, desiredStatus=status)["taskArns"]
    if not arns:
        return []
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    return [t for t in tasks if t.get("group") == f"daemon:{name}"]


def deployment(ecs, arn):
    return ecs.describe_daemon_deployments(daemonDeploymentArns=[arn])["daemonDeployments"][0]


def test_daemon_task_definitions(ecs):
    fam = unique("agent")
    a1 = register_dtd(ecs, fam, tags=[{"key": "team", "value": "ops"}])
    a2 = register_dtd(ecs, fam, cpu="256", memory="128")
    assert a1 == f"{PREFIX}:daemon-task-definition/{fam}:1"
    assert a2.endswith(f"{fam}:2")

    latest = ecs.describe_daemon_task_definition(daemonTaskDefinition=fam)["daemonTaskDefinition"]
    assert (latest["family"], latest["revision"], latest["status"], latest["cpu"]) == (fam, 2, "ACTIVE", "256")
    assert latest["containerDefinitions"][0]["image"] == "busybox"
    assert ecs.describe_daemon_task_definition(daemonTaskDefinition=f"{fam}:1")["daemonTaskDefinition"]["revision"] == 1
    assert ecs.describe_daemon_task_definition(daemonTaskDefinition=a1)["daemonTaskDefinition"]["daemonTaskDefinitionArn"] == a1

    listed = ecs.list_daemon_task_definitions(family=fam)["daemonTaskDefinitions"]
    assert [d["arn"] for d in listed] == [a1, a2]
    assert all(d["status"] == "ACTIVE" and d["registeredAt"] for d in listed)
    desc = ecs.list_daemon_task_definitions(familyPrefix=fam, sort="DESC")["daemonTaskDefinitions"]
    assert [d["arn"] for d in desc] == [a2, a1]
    last = ecs.list_daemon_task_definitions(family=fam, revision="LAST_REGISTERED")["daemonTaskDefinitions"]
    assert [d["arn"] for d in last] == [a2]
    page = ecs.list_daemon_task_definitions(family=fam, maxResults=1)
    assert [d["arn"] for d in page["daemonTaskDefinitions"]] == [a1] and page["nextToken"]

    # They are not task definitions: neither listed nor runnable as one.
    assert not any(fam in a for a in ecs.list_task_definitions()["taskDefinitionArns"])
    assert fam not in ecs.list_task_definition_families()["families"]
    with pytest.raises(ClientError) as e:
        ecs.describe_task_definition(taskDefinition=a1)
    assert error_code(e) == "ClientException"

    assert ecs.list_tags_for_resource(resourceArn=a1)["tags"] == [{"key": "team", "value": "ops"}]
    ecs.tag_resource(resourceArn=a2, tags=[{"key": "tier", "value": "2"}])
    assert ecs.list_tags_for_resource(resourceArn=a2)["tags"] == [{"key": "tier", "value": "2"}]
    with pytest.raises(ClientError) as e:
        ecs.list_tags_for_resource(resourceArn=f"{PREFIX}:daemon-task-definition/{fam}:7")
    assert error_code(e) == "ResourceNotFoundException"

    # A revision a daemon runs stays DELETE_IN_PROGRESS until the daemon is gone; an unused one
    # is DELETED at once.
    cluster, cp = mi_cluster(ecs)
    d = ecs.create_daemon(daemonName="user", clusterArn=cluster, daemonTaskDefinitionArn=a2, capacityProviderArns=[cp])
    assert ecs.delete_daemon_task_definition(daemonTaskDefinition=a1)["daemonTaskDefinitionArn"] == a1
    assert ecs.delete_daemon_task_definition(daemonTaskDefinition=a2)["daemonTaskDefinitionArn"] == a2
    status = lambda a: ecs.describe_daemon_task_definition(daemonTaskDefinition=a)["daemonTaskDefinition"]
    wait_until(lambda: status(a1)["status"] == "DELETED", timeout=10, what="the unused revision DELETED")
    assert status(a1)["deleteRequestedAt"]
    assert status(a2)["status"] == "DELETE_IN_PROGRESS"
    assert ecs.list_daemon_task_definitions(family=fam)["daemonTaskDefinitions"] == []
    assert [d["arn"] for d in ecs.list_daemon_task_definitions(family=fam, status="DELETE_IN_PROGRESS")["daemonTaskDefinitions"]] == [a2]
    assert len(ecs.list_daemon_task_definitions(family=fam, status="ALL")["daemonTaskDefinitions"]) == 2
    with pytest.raises(ClientError) as e:
        ecs.update_daemon(daemonArn=d["daemonArn"], daemonTaskDefinitionArn=a2, capacityProviderArns=[cp])
    assert error_code(e) == "ClientException" and "is not ACTIVE" in error_message(e)
    ecs.delete_daemon(daemonArn=d["daemonArn"])
    wait_until(lambda: status(a2)["status"] == "DELETED", timeout=10, what="the revision DELETED once its daemon is gone")

    with pytest.raises(ClientError) as e:
        ecs.delete_daemon_task_definition(daemonTaskDefinition=fam)
    assert error_code(e) == "ClientException" and "revision must be specified" in error_message(e)
    with pytest.raises(ClientError) as e:
        ecs.describe_daemon_task_definition(daemonTaskDefinition=f"{fam}:9")
    assert error_code(e) == "ClientException"
    with pytest.raises(ClientError) as e:
        register_dtd(ecs, "not valid")
    assert error_code(e) == "ClientException" and "Family 'not valid' is not valid" in error_message(e)


def test_create_daemon_checks(ecs):
    cluster, cp = mi_cluster(ecs)
    td = register_dtd(ecs, unique("agent"))
    cp_arn = f"{PREFIX}:capacity-provider/{cp}"

    with pytest.raises(ClientError) as e:
        ecs.create_daemon(daemonName="d", clusterArn=unique("nope"), daemonTaskDefinitionArn=td, capacityProviderArns=[cp_arn])
    assert error_code(e) == "ClusterNotFoundException"

    asg = unique("asg")
    ecs.create_capacity_provider(name=asg, autoScalingGroupProvider={"autoScalingGroupArn": f"arn:aws:autoscaling:us-east-1:{ACCOUNT}:autoScalingGroup:x:autoScalingGroupName/{asg}"})
    with pytest.raises(ClientError) as e:
        ecs.create_daemon(daemonName="d", clusterArn=cluster, daemonTaskDefinitionArn=td, capacityProviderArns=[asg])
    assert error_code(e) == "InvalidParameterException" and "Managed Instances" in error_message(e)

    other, _ = mi_cluster(ecs)
    with pytest.raises(ClientError) as e:
        ecs.create_daemon(daemonName="d", clusterArn=other, daemonTaskDefinitionArn=td, capacityProviderArns=[cp_arn])
    assert error_code(e) == "InvalidParameterException" and "not associated with the cluster" in error_message(e)

    with pytest.raises(ClientError) as e:
        ecs.create_daemon(daemonName="d", clusterArn=cluster, daemonTaskDefinitionArn=f"{PREFIX}:daemon-task-definition/nope:1",
                          capacityProviderArns=[cp_arn])
    assert error_code(e) == "ClientException" and "was not found" in error_message(e)

    with pytest.raises(ClientError) as e:
        ecs.create_daemon(daemonName="bad name", clusterArn=cluster, daemonTaskDefinitionArn=td, capacityProviderArns=[cp_arn])
    assert error_code(e) == "InvalidParameterException"

    with pytest.raises(ClientError) as e:
        ecs.create_daemon(daemonName="d", clusterArn=cluster, daemonTaskDefinitionArn=td, capacityProviderArns=[cp_arn],
                          deploymentConfiguration={"drainPercent": 150.0})
    assert error_code(e) == "InvalidParameterException"

    # Nothing was written by the refused calls.
    assert ecs.list_daemons(clusterArn=cluster)["daemonSummariesList"] == []

    with pytest.raises(ClientError) as e:
        ecs.describe_daemon(daemonArn=f"{PREFIX}:daemon/{cluster}/missing")
    assert error_code(e) == "DaemonNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.update_daemon(daemonArn=f"{PREFIX}:daemon/{cluster}/missing", daemonTaskDefinitionArn=td, capacityProviderArns=[cp_arn])
    assert error_code(e) == "DaemonNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.delete_daemon(daemonArn=f"{PREFIX}:daemon/{cluster}/missing")
    assert error_code(e) == "DaemonNotFoundException"

    # Idempotency: the same client token gives the same daemon; another creation is refused.
    token = uuid.uuid4().hex
    a = ecs.create_daemon(daemonName="d", clusterArn=cluster, daemonTaskDefinitionArn=td, capacityProviderArns=[cp_arn], clientToken=token)
    b = ecs.create_daemon(daemonName="d", clusterArn=cluster, daemonTaskDefinitionArn=td, capacityProviderArns=[cp_arn], clientToken=token)
    assert a["daemonArn"] == b["daemonArn"] == f"{PREFIX}:daemon/{cluster}/d"
    assert a["deploymentArn"] == b["deploymentArn"]
    ecs.tag_resource(resourceArn=a["daemonArn"], tags=[{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
    ecs.untag_resource(resourceArn=a["daemonArn"], tagKeys=["a"])
    assert ecs.list_tags_for_resource(resourceArn=a["daemonArn"])["tags"] == [{"key": "b", "value": "2"}]
    with pytest.raises(ClientError) as e:
        ecs.create_daemon(daemonName="d", clusterArn=cluster, daemonTaskDefinitionArn=td, capacityProviderArns=[cp_arn])
    assert error_code(e) == "InvalidParameterException"
    ecs.delete_daemon(daemonArn=a["daemonArn"])


def test_daemon_runs_one_task_per_instance_and_rolls_out(ecs):
    """Instances registered by hand (no agent runs their tasks): the daemon's tasks are placed
    one per instance; the test reports them RUNNING with SubmitTaskStateChange."""
    cluster, cp = mi_cluster(ecs)
    fam = unique("agent")
    td1, td2 = register_dtd(ecs, fam), register_dtd(ecs, fam)
    instances = [ecs.register_container_instance(cluster=cluster, totalResources=RES)["containerInstance"]["containerInstanceArn"]
                 for _ in range(4)]
    created = ecs.create_daemon(daemonName="mon", clusterArn=cluster, daemonTaskDefinitionArn=td1, capacityProviderArns=[cp],
                                deploymentConfiguration={"drainPercent": 25.0}, tags=[{"key": "k", "value": "v"}],
                                propagateTags="DAEMON")
    assert created["status"] == "ACTIVE"
    assert created["deploymentArn"].startswith(f"{PREFIX}:daemon-deployment/{cluster}/mon/")

    def placed(status="PENDING"):
        return [t for t in daemon_tasks(ecs, cluster, "mon", "RUNNING") if t["lastStatus"] != "STOPPED"]

    tasks = wait_until(lambda: (lambda ts: ts if len(ts) == 4 else None)(placed()), timeout=20, what="4 daemon tasks")
    assert sorted(t["containerInstanceArn"] for t in tasks) == sorted(instances), "one task per instance"
    rev1 = {t["startedBy"] for t in tasks}
    assert len(rev1) == 1 and next(iter(rev1)).startswith("ecs-daemon/")
    assert all(t["taskDefinitionArn"] == td1 and t["capacityProviderName"] == cp and t["launchType"] == "EC2" for t in tasks)
    assert all({"key": "k", "value": "v"} in ecs.describe_tasks(cluster=cluster, tasks=[t["taskArn"]], include=["TAGS"])["tasks"][0]["tags"]
               for t in tasks)

    def report_running():
        for t in placed():
            if t["lastStatus"] != "RUNNING":
                ecs.submit_task_state_change(cluster=cluster, task=t["taskArn"], status="RUNNING")

    report_running()
    first = deployment(ecs, created["deploymentArn"])
    wait_until(lambda: deployment(ecs, created["deploymentArn"])["status"] == "SUCCESSFUL", timeout=20, what="first deployment done")
    d = ecs.describe_daemon(daemonArn=created["daemonArn"])["daemon"]
    assert d["currentRevisions"][0]["totalRunningCount"] == 4
    assert d["currentRevisions"][0]["capacityProviders"] == [{"arn": f"{PREFIX}:capacity-provider/{cp}", "runningCount": 4}]
    rev_arn = d["currentRevisions"][0]["arn"]
    rev = ecs.describe_daemon_revisions(daemonRevisionArns=[rev_arn, rev_arn + "0"])
    assert rev["daemonRevisions"][0]["daemonTaskDefinitionArn"] == td1
    assert rev["failures"] == [{"arn": rev_arn + "0", "reason": "MISSING"}]
    assert first["targetDaemonRevision"]["arn"] == rev_arn

    # A new instance gets its daemon task.
    extra = ecs.register_container_instance(cluster=cluster, totalResources=RES)["containerInstance"]["containerInstanceArn"]
    wait_until(lambda: any(t["containerInstanceArn"] == extra for t in placed()), timeout=20, what="a task on the new instance")
    report_running()
    instances.append(extra)

    # UpdateDaemon: a new revision rolled out at most ceil(25 % of 5) = 2 instances at a time.
    up = ecs.update_daemon(daemonArn=created["daemonArn"], daemonTaskDefinitionArn=td2, capacityProviderArns=[cp],
                           deploymentConfiguration={"drainPercent": 25.0})
    assert up["deploymentArn"] != created["deploymentArn"]
    most_replacing = 0

    def rolled():
        # Looked at before this test, standing in for the agent, reports the new tasks RUNNING.
        nonlocal most_replacing
        live = placed()
        stopping = [t for t in daemon_tasks(ecs, cluster, "mon", "STOPPED") if t["lastStatus"] != "STOPPED"]
        starting = [t for t in live if t["lastStatus"] != "RUNNING"]
        empty = set(instances) - {t["containerInstanceArn"] for t in live}
        replacing = {t["containerInstanceArn"] for t in stopping + starting} | empty
        most_replacing = max(most_replacing, len(replacing))
        report_running()
        return len(live) == 5 and all(t["taskDefinitionArn"] == td2 and t["lastStatus"] == "RUNNING" for t in live)

    wait_until(rolled, timeout=60, interval=0.2, what="every instance on the new revision")
    assert most_replacing <= 2, f"at most 2 instances replaced at a time, saw {most_replacing}"
    dep = wait_until(lambda: (lambda d: d if d["status"] == "SUCCESSFUL" else None)(deployment(ecs, up["deploymentArn"])),
                     timeout=20, what="the update's deployment")
    assert dep["targetDaemonRevision"]["totalRunningInstanceCount"] == 5
    assert dep["sourceDaemonRevisions"][0]["arn"] == rev_arn
    assert dep["deploymentConfiguration"]["drainPercent"] == 25.0
    assert deployment(ecs, created["deploymentArn"])["status"] == "SUCCESSFUL"
    listed = ecs.list_daemon_deployments(daemonArn=created["daemonArn"])["daemonDeployments"]
    assert [x["daemonDeploymentArn"] for x in listed] == [up["deploymentArn"], created["deploymentArn"]]
    assert [x["daemonDeploymentArn"] for x in ecs.list_daemon_deployments(daemonArn=created["daemonArn"], status=["SUCCESSFUL"])["daemonDeployments"]] \
        == [up["deploymentArn"], created["deploymentArn"]]
    assert ecs.list_daemons(clusterArn=cluster)["daemonSummariesList"][0]["daemonArn"] == created["daemonArn"]
    assert ecs.list_daemons(capacityProviderArns=[f"{PREFIX}:capacity-provider/{cp}"])["daemonSummariesList"][0]["daemonArn"] == created["daemonArn"]

    # A daemon task that stops is replaced on its instance.
    victim = placed()[0]
    ecs.stop_task(cluster=cluster, task=victim["taskArn"])
    ecs.submit_task_state_change(cluster=cluster, task=victim["taskArn"], status="STOPPED")
    wait_until(lambda: any(t["containerInstanceArn"] == victim["containerInstanceArn"] and t["taskArn"] != victim["taskArn"]
                           for t in placed()), timeout=20, what="the stopped daemon task replaced")

    # DeleteDaemon: DELETE_IN_PROGRESS while its tasks stop, then gone.
    deleted = ecs.delete_daemon(daemonArn=created["daemonArn"])
    assert deleted["status"] == "DELETE_IN_PROGRESS"
    with pytest.raises(ClientError) as e:
        ecs.update_daemon(daemonArn=created["daemonArn"], daemonTaskDefinitionArn=td2, capacityProviderArns=[cp])
    assert error_code(e) in ("DaemonNotActiveException", "DaemonNotFoundException")
    for t in daemon_tasks(ecs, cluster, "mon", "STOPPED"):
        if t["lastStatus"] != "STOPPED":
            ecs.submit_task_state_change(cluster=cluster, task=t["taskArn"], status="STOPPED")

    def gone():
        try:
            ecs.describe_daemon(daemonArn=created["daemonArn"])
            return False
        except ClientError as err:
            return err.response["Error"]["Code"] == "DaemonNotFoundException"
    wait_until(gone, timeout=20, what="the daemon deleted")
    assert placed() == []
    assert deployment(ecs, deleted["deploymentArn"])["status"] == "SUCCESSFUL"


def test_daemon_deployment_bake_time_holds_the_next_step(ecs):
    cluster, cp = mi_cluster(ecs)
    fam = unique("agent")
    td1, td2 = register_dtd(ecs, fam), register_dtd(ecs, fam)
    for _ in range(2):
        ecs.register_container_instance(cluster=cluster, totalResources=RES)
    d = ecs.create_daemon(daemonName="b", clusterArn=cluster, daemonTaskDefinitionArn=td1, capacityProviderArns=[cp])
    wait_until(lambda: len(daemon_tasks(ecs, cluster, "b")) == 2, timeout=20, what="2 daemon tasks")
    for t in daemon_tasks(ecs, cluster, "b"):
        ecs.submit_task_state_change(cluster=cluster, task=t["taskArn"], status="RUNNING")
    up = ecs.update_daemon(daemonArn=d["daemonArn"], daemonTaskDefinitionArn=td2, capacityProviderArns=[cp],
                           deploymentConfiguration={"drainPercent": 50.0, "bakeTimeInMinutes": 5})

    def step_done():
        for t in daemon_tasks(ecs, cluster, "b"):
            if t["lastStatus"] != "RUNNING":
                ecs.submit_task_state_change(cluster=cluster, task=t["taskArn"], status="RUNNING")
        for t in daemon_tasks(ecs, cluster, "b", "STOPPED"):
            if t["lastStatus"] != "STOPPED":
                ecs.submit_task_state_change(cluster=cluster, task=t["taskArn"], status="STOPPED")
        live = daemon_tasks(ecs, cluster, "b")
        return sorted(t["taskDefinitionArn"] for t in live) == [td1, td2] and all(t["lastStatus"] == "RUNNING" for t in live)
    wait_until(step_done, timeout=30, interval=0.2, what="the first step (one instance of two)")
    # The bake time (5 minutes) holds the second step: the other instance keeps revision 1.
    import time
    time.sleep(2)
    assert sorted(t["taskDefinitionArn"] for t in daemon_tasks(ecs, cluster, "b")) == [td1, td2]
    dep = deployment(ecs, up["deploymentArn"])
    assert dep["status"] == "IN_PROGRESS" and dep["startedAt"]
    assert dep["targetDaemonRevision"]["totalRunningInstanceCount"] == 1
    ecs.delete_daemon(daemonArn=d["daemonArn"])


def test_instances_that_name_another_provider_are_left_out(ecs):
    cluster, cp = mi_cluster(ecs)
    other = unique("mi")
    ecs.create_capacity_provider(name=other, managedInstancesProvider=MI)
    ecs.put_cluster_capacity_providers(cluster=cluster, capacityProviders=[cp, other], defaultCapacityProviderStrategy=[])
    mine, theirs, anyone = [ecs.register_container_instance(cluster=cluster, totalResources=RES)["containerInstance"]["containerInstanceArn"]
                            for _ in range(3)]
    ecs.put_attributes(cluster=cluster, attributes=[{"name": "estiba.capacity-provider", "value": cp, "targetId": mine},
                                                    {"name": "estiba.capacity-provider", "value": other, "targetId": theirs}])
    d = ecs.create_daemon(daemonName="p", clusterArn=cluster, daemonTaskDefinitionArn=register_dtd(ecs, unique("agent")),
                          capacityProviderArns=[cp])
    on = lambda: sorted(t["containerInstanceArn"] for t in daemon_tasks(ecs, cluster, "p"))
    wait_until(lambda: on() == sorted([mine, anyone]), timeout=20, what="tasks on the provider's instances only")
    # An instance moved to the other provider loses its daemon task.
    ecs.put_attributes(cluster=cluster, attributes=[{"name": "estiba.capacity-provider", "value": other, "targetId": anyone}])
    wait_until(lambda: on() == [mine], timeout=20, what="the task of the moved instance stopped")
    ecs.delete_daemon(daemonArn=d["daemonArn"])


def test_an_alarm_rolls_a_daemon_deployment_back(shared, ecs):
    cw = shared.client("cloudwatch")
    alarm = unique("daemon-errors")
    # Missing data counts as breaching, so evaluations keep it in ALARM once set there.
    cw.put_metric_alarm(AlarmName=alarm, Namespace=unique("E2E/daemon"), MetricName="Errors", Statistic="Sum", Period=60,
                        EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold",
                        TreatMissingData="breaching")
    cluster, cp = mi_cluster(ecs)
    fam = unique("agent")
    td1, td2 = register_dtd(ecs, fam), register_dtd(ecs, fam)
    for _ in range(2):
        ecs.register_container_instance(cluster=cluster, totalResources=RES)
    d = ecs.create_daemon(daemonName="r", clusterArn=cluster, daemonTaskDefinitionArn=td1, capacityProviderArns=[cp])

    def agent():
        """Stands in for the agent: placed tasks run, stopping ones stop."""
        for t in daemon_tasks(ecs, cluster, "r"):
            if t["lastStatus"] != "RUNNING":
                ecs.submit_task_state_change(cluster=cluster, task=t["taskArn"], status="RUNNING")
        for t in daemon_tasks(ecs, cluster, "r", "STOPPED"):
            if t["lastStatus"] != "STOPPED":
                ecs.submit_task_state_change(cluster=cluster, task=t["taskArn"], status="STOPPED")
        return daemon_tasks(ecs, cluster, "r")

    wait_until(lambda: len(agent()) == 2 and deployment(ecs, d["deploymentArn"])["status"] == "SUCCESSFUL", timeout=20,
               what="the first deployment")
    up = ecs.update_daemon(daemonArn=d["daemonArn"], daemonTaskDefinitionArn=td2, capacityProviderArns=[cp],
                           deploymentConfiguration={"drainPercent": 50.0, "bakeTimeInMinutes": 10,
                                                    "alarms": {"enable": True, "alarmNames": [alarm]}})
    dep = deployment(ecs, up["deploymentArn"])
    assert dep["alarms"] == {"alarmNames": [alarm], "status": "MONITORING", "triggeredAlarmNames": []}
    # One instance of two moves to revision 2; the bake time holds the other.
    wait_until(lambda: sorted(t["taskDefinitionArn"] for t in agent() if t["lastStatus"] == "RUNNING") == [td1, td2],
               timeout=20, what="the first step")
    cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="errors")
    dep = wait_until(lambda: (lambda x: x if x["status"] in ("ROLLBACK_IN_PROGRESS", "ROLLBACK_SUCCESSFUL") else None)(
        deployment(ecs, up["deploymentArn"])), timeout=20, what="the rollback")
    assert dep["alarms"]["status"] == "TRIGGERED" and dep["alarms"]["triggeredAlarmNames"] == [alarm]
    assert dep["rollback"]["rollbackTargetDaemonRevisionArn"] == dep["sourceDaemonRevisions"][0]["arn"]
    assert alarm in dep["rollback"]["reason"]
    wait_until(lambda: [t["taskDefinitionArn"] for t in agent() if t["lastStatus"] == "RUNNING"] == [td1, td1], timeout=20,
               what="every instance back on revision 1")
    wait_until(lambda: deployment(ecs, up["deploymentArn"])["status"] == "ROLLBACK_SUCCESSFUL", timeout=20, what="rolled back")
    detail = ecs.describe_daemon(daemonArn=d["daemonArn"])["daemon"]
    assert detail["currentRevisions"][0]["arn"] == dep["sourceDaemonRevisions"][0]["arn"]
    assert detail["currentRevisions"][0]["totalRunningCount"] == 2
    ecs.delete_daemon(daemonArn=d["daemonArn"])
    cw.delete_alarms(AlarmNames=[alarm])


def test_service_tasks_wait_for_the_daemon_on_a_new_instance(ecs):
    cluster, cp = mi_cluster(ecs)
    d = ecs.create_daemon(daemonName="first", clusterArn=cluster, daemonTaskDefinitionArn=register_dtd(ecs, unique("agent")),
                          capacityProviderArns=[cp])
    fam = unique("app")
    ecs.register_task_definition(family=fam, containerDefinitions=[{"name": "app", "image": "busybox", "memory": 32}])
    ecs.create_service(cluster=cluster, serviceName="app", taskDefinition=fam, desiredCount=1, launchType="EC2")
    ci = ecs.register_container_instance(cluster=cluster, totalResources=RES)["containerInstance"]["containerInstanceArn"]

    def both():
        arns = ecs.list_tasks(cluster=cluster)["taskArns"]
        tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []
        by = {t["group"]: t for t in tasks}
        return by if {"daemon:first", "service:app"} <= set(by) else None
    by = wait_until(both, timeout=30, what="the daemon's and the service's tasks")
    assert by["daemon:first"]["containerInstanceArn"] == by["service:app"]["containerInstanceArn"] == ci
    assert by["daemon:first"]["createdAt"] <= by["service:app"]["createdAt"], "the daemon's task first"
    ecs.update_service(cluster=cluster, service="app", desiredCount=0)
    ecs.delete_service(cluster=cluster, service="app", force=True)
    ecs.delete_daemon(daemonArn=d["daemonArn"])


@pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")
@pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out (use cargo xtask test)")
def test_daemon_runs_real_containers_on_the_node(tmp_path_factory, busybox):
    cluster = unique("dc")
    with running_node(tmp_path_factory, "--join-cluster", cluster, name="daemons") as node:
        ecs = node.client()
        cluster, cp = mi_cluster(ecs, cluster)
        ci = wait_until(lambda: ecs.list_container_instances(cluster=cluster)["containerInstanceArns"], timeout=20,
                        what="the node joined the cluster")[0]
        fam = unique("agent")
        td1, td2 = register_dtd(ecs, fam, image=busybox), register_dtd(ecs, fam, image=busybox)
        d = ecs.create_daemon(daemonName="real", clusterArn=cluster, daemonTaskDefinitionArn=td1, capacityProviderArns=[cp])
        try:
            t = wait_until(lambda: [t for t in daemon_tasks(ecs, cluster, "real") if t["lastStatus"] == "RUNNING"],
                           timeout=60, what="the daemon task RUNNING")[0]
            assert t["containerInstanceArn"] == ci and t["taskDefinitionArn"] == td1
            assert t["containers"][0]["lastStatus"] == "RUNNING"
            wait_until(lambda: deployment(ecs, d["deploymentArn"])["status"] == "SUCCESSFUL", timeout=30, what="deployed")

            # Its container dies: the daemon starts another on the instance.
            ecs.stop_task(cluster=cluster, task=t["taskArn"])
            wait_until(lambda: [x for x in daemon_tasks(ecs, cluster, "real") if x["lastStatus"] == "RUNNING" and x["taskArn"] != t["taskArn"]],
                       timeout=60, what="the daemon task replaced")

            up = ecs.update_daemon(daemonArn=d["daemonArn"], daemonTaskDefinitionArn=td2, capacityProviderArns=[cp])
            wait_until(lambda: deployment(ecs, up["deploymentArn"])["status"] == "SUCCESSFUL", timeout=60, what="update deployed")
            live = daemon_tasks(ecs, cluster, "real")
            assert [x["taskDefinitionArn"] for x in live] == [td2] and live[0]["lastStatus"] == "RUNNING"
        finally:
            ecs.delete_daemon(daemonArn=d["daemonArn"])

        def gone():
            try:
                ecs.describe_daemon(daemonArn=d["daemonArn"])
                return False
            except ClientError as err:
                return err.response["Error"]["Code"] == "DaemonNotFoundException"
        wait_until(gone, timeout=60, what="the daemon deleted, its tasks stopped")
        assert daemon_tasks(ecs, cluster, "real") == []
