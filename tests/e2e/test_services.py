"""Services: create, update, delete, describe, list, deployments and their records."""

import pytest
from botocore.exceptions import ClientError

from conftest import AWSVPC, error_code, error_message, register_fargate, unique, wait_until


@pytest.fixture
def setup(ecs):
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    fam = unique("f")
    register_fargate(ecs, fam)
    register_fargate(ecs, fam)
    return cluster, fam


def test_create_service_with_the_cli(shared, setup):
    cluster, fam = setup
    s = shared.aws(
        "ecs", "create-service", "--cluster", cluster, "--service-name", "web", "--task-definition", f"{fam}:1",
        "--desired-count", "2", "--launch-type", "FARGATE",
        "--network-configuration", "awsvpcConfiguration={subnets=[subnet-1],securityGroups=[sg-1],assignPublicIp=ENABLED}",
        "--tags", "key=tier,value=front", "--propagate-tags", "SERVICE",
    )["service"]
    assert s["serviceArn"] == f"arn:aws:ecs:us-east-1:000000000000:service/{cluster}/web"
    assert s["status"] == "ACTIVE"
    assert s["desiredCount"] == 2
    assert s["launchType"] == "FARGATE"
    assert s["platformVersion"] == "LATEST"
    assert s["deploymentConfiguration"]["maximumPercent"] == 200
    assert s["deploymentConfiguration"]["minimumHealthyPercent"] == 100
    assert s["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": False, "rollback": False}
    assert s["schedulingStrategy"] == "REPLICA"
    assert s["deploymentController"] == {"type": "ECS"}
    assert s["tags"] == [{"key": "tier", "value": "front"}]
    [d] = s["deployments"]
    assert d["status"] == "PRIMARY" and d["rolloutState"] == "IN_PROGRESS"
    assert d["id"].startswith("ecs-svc/")
    # The scheduler starts the tasks; they stay pending until a node runs them.
    ecs = shared.client()
    svc = wait_until(lambda: (x := ecs.describe_services(cluster=cluster, services=["web"])["services"][0])["pendingCount"] == 2 and x,
                     what="two pending tasks")
    assert svc["runningCount"] == 0
    assert svc["deployments"][0]["pendingCount"] == 2
    assert "has started 2 tasks" in svc["events"][0]["message"]
    tasks = ecs.describe_tasks(cluster=cluster, tasks=ecs.list_tasks(cluster=cluster, serviceName="web")["taskArns"], include=["TAGS"])["tasks"]
    assert len(tasks) == 2
    assert {t["group"] for t in tasks} == {"service:web"}
    assert {t["startedBy"] for t in tasks} == {d["id"]}
    assert {"key": "tier", "value": "front"} in tasks[0]["tags"]


def test_create_service_errors(ecs, setup):
    cluster, fam = setup
    ecs.create_service(cluster=cluster, serviceName="dup", taskDefinition=fam, desiredCount=0, networkConfiguration=AWSVPC)
    cases = [
        (dict(serviceName="dup", taskDefinition=fam, desiredCount=1, networkConfiguration=AWSVPC), "InvalidParameterException", "Creation of service was not idempotent."),
        (dict(serviceName="nonet", taskDefinition=fam, desiredCount=1), "InvalidParameterException", "Network Configuration must be provided"),
        (dict(serviceName="notd", taskDefinition=unique("x"), desiredCount=1, networkConfiguration=AWSVPC), "ClientException", "TaskDefinition not found."),
        (dict(serviceName="bad name", taskDefinition=fam, desiredCount=1, networkConfiguration=AWSVPC), "InvalidParameterException", "Service name"),
        (dict(serviceName="pct", taskDefinition=fam, desiredCount=1, networkConfiguration=AWSVPC,
              deploymentConfiguration={"minimumHealthyPercent": 150}), "InvalidParameterException", "minimumHealthyPercent"),
        (dict(serviceName="nodesired", taskDefinition=fam, networkConfiguration=AWSVPC), "InvalidParameterException", "desiredCount must be specified"),
        (dict(serviceName="lb", taskDefinition=fam, desiredCount=1, networkConfiguration=AWSVPC,
              loadBalancers=[{"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/t/1", "containerName": "app", "containerPort": 8080}]),
         "InvalidParameterException", "did not have a container port 8080"),
    ]
    for kw, code, msg in cases:
        with pytest.raises(ClientError) as e:
            ecs.create_service(cluster=cluster, **kw)
        assert error_code(e) == code, (kw, error_message(e))
        assert msg in error_message(e), (kw, error_message(e))
    assert [a.rsplit("/", 1)[1] for a in ecs.list_services(cluster=cluster)["serviceArns"]] == ["dup"]


def test_update_service_deploys_and_records(shared, setup):
    cluster, fam = setup
    ecs = shared.client()
    first = ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=f"{fam}:1", desiredCount=1, networkConfiguration=AWSVPC)["service"]
    dep1 = first["deployments"][0]["id"]
    # Scaling alone makes no new deployment.
    s = ecs.update_service(cluster=cluster, service="web", desiredCount=3)["service"]
    assert [d["id"] for d in s["deployments"]] == [dep1]
    assert s["deployments"][0]["desiredCount"] == 3
    s = ecs.update_service(cluster=cluster, service="web", taskDefinition=f"{fam}:2")["service"]
    assert [d["status"] for d in s["deployments"]] == ["PRIMARY", "ACTIVE"]
    dep2 = s["deployments"][0]["id"]
    assert s["taskDefinition"].endswith(f"{fam}:2")
    s = ecs.update_service(cluster=cluster, service="web", forceNewDeployment=True)["service"]
    dep3 = s["deployments"][0]["id"]
    assert len({dep1, dep2, dep3}) == 3
    # Every deployment id leads to its service revision and its service deployment record.
    records = ecs.list_service_deployments(cluster=cluster, service="web")["serviceDeployments"]
    assert len(records) == 3
    by_rev = {r["targetServiceRevisionArn"]: r for r in records}
    for dep in (dep1, dep2, dep3):
        n = dep.split("/")[1]
        rev_arn = f"arn:aws:ecs:us-east-1:000000000000:service-revision/{cluster}/web/{n}"
        assert rev_arn in by_rev
        rev = ecs.describe_service_revisions(serviceRevisionArns=[rev_arn])["serviceRevisions"][0]
        assert rev["serviceArn"] == first["serviceArn"]
    assert records[0]["targetServiceRevisionArn"].endswith(dep3.split("/")[1])
    assert by_rev[f"arn:aws:ecs:us-east-1:000000000000:service-revision/{cluster}/web/{dep3.split('/')[1]}"]["status"] == "IN_PROGRESS"
    older = [r for r in records if not r["targetServiceRevisionArn"].endswith(dep3.split("/")[1])]
    assert {r["status"] for r in older} == {"STOPPED"}
    full = ecs.describe_service_deployments(serviceDeploymentArns=[records[0]["serviceDeploymentArn"], records[0]["serviceDeploymentArn"] + "x"])
    assert full["serviceDeployments"][0]["targetServiceRevision"]["requestedTaskCount"] == 3
    assert full["failures"][0]["reason"] == "MISSING"
    assert len(ecs.list_service_deployments(cluster=cluster, service="web", status=["IN_PROGRESS"])["serviceDeployments"]) == 1
    with pytest.raises(ClientError) as e:
        ecs.update_service(cluster=cluster, service=unique("ghost"), desiredCount=1)
    assert error_code(e) == "ServiceNotFoundException"


def test_scale_in_stops_pending_tasks(ecs, setup):
    cluster, fam = setup
    ecs.create_service(cluster=cluster, serviceName="s", taskDefinition=fam, desiredCount=5, networkConfiguration=AWSVPC)
    wait_until(lambda: len(ecs.list_tasks(cluster=cluster, serviceName="s")["taskArns"]) == 5, what="5 tasks")
    ecs.update_service(cluster=cluster, service="s", desiredCount=2)
    wait_until(lambda: len(ecs.list_tasks(cluster=cluster, serviceName="s")["taskArns"]) == 2, what="2 tasks")
    stopped = ecs.list_tasks(cluster=cluster, serviceName="s", desiredStatus="STOPPED")["taskArns"]
    assert len(stopped) == 3
    t = ecs.describe_tasks(cluster=cluster, tasks=stopped)["tasks"][0]
    assert t["stopCode"] == "ServiceSchedulerInitiated"
    events = ecs.describe_services(cluster=cluster, services=["s"])["services"][0]["events"]
    assert any("has stopped 3 running tasks" in e["message"] for e in events)


def test_delete_service_and_wait_inactive(shared, setup):
    cluster, fam = setup
    ecs = shared.client()
    ecs.create_service(cluster=cluster, serviceName="gone", taskDefinition=fam, desiredCount=2, networkConfiguration=AWSVPC)
    wait_until(lambda: len(ecs.list_tasks(cluster=cluster, serviceName="gone")["taskArns"]) == 2, what="2 tasks")
    with pytest.raises(ClientError) as e:
        ecs.delete_service(cluster=cluster, service="gone")
    assert error_message(e) == "The service cannot be stopped while it is scaled above 0."
    s = shared.aws("ecs", "delete-service", "--cluster", cluster, "--service", "gone", "--force")["service"]
    assert s["status"] == "DRAINING"
    shared.aws("ecs", "wait", "services-inactive", "--cluster", cluster, "--services", "gone")
    s = ecs.describe_services(cluster=cluster, services=["gone"])["services"][0]
    assert s["status"] == "INACTIVE"
    assert ecs.list_tasks(cluster=cluster, serviceName="gone")["taskArns"] == []
    assert s["serviceArn"] not in ecs.list_services(cluster=cluster)["serviceArns"]
    with pytest.raises(ClientError) as e:
        ecs.delete_service(cluster=cluster, service="gone")
    assert error_code(e) == "ServiceNotActiveException"
    with pytest.raises(ClientError) as e:
        ecs.update_service(cluster=cluster, service="gone", desiredCount=1)
    assert error_code(e) == "ServiceNotActiveException"
    # The name is free again.
    ecs.create_service(cluster=cluster, serviceName="gone", taskDefinition=fam, desiredCount=0, networkConfiguration=AWSVPC)


def test_describe_and_list_services(ecs, setup):
    cluster, fam = setup
    for i in range(12):
        ecs.create_service(cluster=cluster, serviceName=f"s{i:02d}", taskDefinition=fam, desiredCount=0,
                           networkConfiguration=AWSVPC, tags=[{"key": "i", "value": str(i)}])
    page = ecs.list_services(cluster=cluster)
    assert len(page["serviceArns"]) == 10 and page["nextToken"]
    rest = ecs.list_services(cluster=cluster, nextToken=page["nextToken"])
    assert len(rest["serviceArns"]) == 2
    assert len(ecs.list_services(cluster=cluster, launchType="FARGATE", maxResults=100)["serviceArns"]) == 12
    assert ecs.list_services(cluster=cluster, launchType="EC2")["serviceArns"] == []
    d = ecs.describe_services(cluster=cluster, services=["s00", page["serviceArns"][1], "nope"], include=["TAGS"])
    assert [s["serviceName"] for s in d["services"]] == ["s00", "s01"]
    assert d["services"][0]["tags"] == [{"key": "i", "value": "0"}]
    assert d["failures"][0]["reason"] == "MISSING"
    # AWS names an unknown service by the short ARN (deploy tools build messages from it).
    assert d["failures"][0]["arn"] == "arn:aws:ecs:us-east-1:000000000000:service/nope"
    with pytest.raises(ClientError) as e:
        ecs.describe_services(cluster=cluster, services=[f"s{i:02d}" for i in range(11)])
    assert error_code(e) == "InvalidParameterException"


def test_services_stable_waiter_on_empty_service(shared, setup):
    cluster, fam = setup
    shared.client().create_service(cluster=cluster, serviceName="empty", taskDefinition=fam, desiredCount=0, networkConfiguration=AWSVPC)
    shared.aws("ecs", "wait", "services-stable", "--cluster", cluster, "--services", "empty")
    s = shared.client().describe_services(cluster=cluster, services=["empty"])["services"][0]
    assert s["deployments"][0]["rolloutState"] == "COMPLETED"
    assert s["events"][0]["message"] == "(service empty) has reached a steady state."
    rec = shared.client().list_service_deployments(cluster=cluster, service="empty")["serviceDeployments"][0]
    assert rec["status"] == "SUCCESSFUL"


def test_list_services_by_namespace(ecs, setup, shared):
    cluster, fam = setup
    ns = unique("ns")
    sd = shared.client("servicediscovery")
    op = sd.create_http_namespace(Name=ns)["OperationId"]
    wait_until(lambda: sd.get_operation(OperationId=op)["Operation"]["Status"] == "SUCCESS", what="the namespace")
    ecs.create_service(cluster=cluster, serviceName="sc", taskDefinition=fam, desiredCount=0, networkConfiguration=AWSVPC,
                       serviceConnectConfiguration={"enabled": True, "namespace": ns})
    arns = ecs.list_services_by_namespace(namespace=ns)["serviceArns"]
    assert arns == [f"arn:aws:ecs:us-east-1:000000000000:service/{cluster}/sc"]
    assert ecs.list_services_by_namespace(namespace=unique("other"))["serviceArns"] == []


def test_stop_service_deployment(ecs, setup):
    cluster, fam = setup
    ecs.create_service(cluster=cluster, serviceName="st", taskDefinition=f"{fam}:1", desiredCount=1, networkConfiguration=AWSVPC)
    ecs.update_service(cluster=cluster, service="st", taskDefinition=f"{fam}:2")
    recs = ecs.list_service_deployments(cluster=cluster, service="st", status=["IN_PROGRESS"])["serviceDeployments"]
    arn = recs[0]["serviceDeploymentArn"]
    assert ecs.stop_service_deployment(serviceDeploymentArn=arn, stopType="ABORT")["serviceDeploymentArn"] == arn
    wait_until(lambda: ecs.describe_service_deployments(serviceDeploymentArns=[arn])["serviceDeployments"][0]["status"] == "STOPPED",
               what="deployment STOPPED")
    with pytest.raises(ClientError) as e:
        ecs.stop_service_deployment(serviceDeploymentArn=arn)
    assert error_code(e) == "ConflictException"
    with pytest.raises(ClientError) as e:
        ecs.stop_service_deployment(serviceDeploymentArn=arn + "zz")
    assert error_code(e) == "ServiceDeploymentNotFoundException"


def test_external_deployment_controller(ecs):
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    s = ecs.create_service(cluster=cluster, serviceName="ext", desiredCount=2,
                           deploymentController={"type": "EXTERNAL"})["service"]
    assert s["deploymentController"] == {"type": "EXTERNAL"}
    assert s["status"] == "ACTIVE" and s["desiredCount"] == 2
    assert s["deployments"] == [] and s["taskSets"] == []
    assert "taskDefinition" not in s
    s = ecs.update_service(cluster=cluster, service="ext", desiredCount=3)["service"]
    assert s["desiredCount"] == 3
    fam = unique("f")
    register_fargate(ecs, fam)
    with pytest.raises(ClientError) as e:
        ecs.update_service(cluster=cluster, service="ext", taskDefinition=fam)
    assert error_code(e) == "InvalidParameterException"
    assert "EXTERNAL" in error_message(e)
    # No task is started for it until a task set asks (test_tasksets.py).
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == []
    with pytest.raises(ClientError) as e:
        ecs.create_service(cluster=cluster, serviceName="cd", desiredCount=1, taskDefinition=fam,
                           deploymentController={"type": "CODE_DEPLOY"})
    assert error_code(e) == "UnsupportedFeatureException"
    ecs.delete_service(cluster=cluster, service="ext", force=True)


def test_task_scale_in_protection_api(ecs):
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    fam = unique("f")
    register_fargate(ecs, fam)
    ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=fam, desiredCount=2, networkConfiguration=AWSVPC)
    arns = wait_until(lambda: len(a := ecs.list_tasks(cluster=cluster, serviceName="web")["taskArns"]) == 2 and a,
                      what="2 service tasks")
    r = ecs.update_task_protection(cluster=cluster, tasks=[arns[0]], protectionEnabled=True, expiresInMinutes=30)
    [p] = r["protectedTasks"]
    assert p["taskArn"] == arns[0] and p["protectionEnabled"] is True
    got = ecs.get_task_protection(cluster=cluster, tasks=arns)["protectedTasks"]
    assert [g["protectionEnabled"] for g in got] == [True, False]
    assert ecs.get_task_protection(cluster=cluster)["protectedTasks"][0]["taskArn"] == arns[0]
    with pytest.raises(ClientError) as e:
        ecs.update_task_protection(cluster=cluster, tasks=[arns[0]], protectionEnabled=True, expiresInMinutes=5000)
    assert error_code(e) == "InvalidParameterException"
    # A standalone task cannot be protected; an unknown one is MISSING.
    solo = ecs.run_task(cluster=cluster, taskDefinition=fam, networkConfiguration=AWSVPC)["tasks"][0]["taskArn"]
    r = ecs.update_task_protection(cluster=cluster, tasks=[solo, "nope"], protectionEnabled=True)
    assert [f["reason"] for f in r["failures"]] == ["TASK_NOT_VALID", "MISSING"]
    ecs.update_task_protection(cluster=cluster, tasks=[arns[0]], protectionEnabled=False)
    assert ecs.get_task_protection(cluster=cluster, tasks=[arns[0]])["protectedTasks"][0]["protectionEnabled"] is False
