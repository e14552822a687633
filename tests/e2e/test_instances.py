"""Container instances and attributes."""

import json

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, unique

RES = [{"name": "CPU", "type": "INTEGER", "integerValue": 2048}, {"name": "MEMORY", "type": "INTEGER", "integerValue": 4096}]


def doc(instance_id, itype="t3.medium", az="us-east-1b"):
    return json.dumps({"instanceId": instance_id, "instanceType": itype, "availabilityZone": az, "imageId": "ami-1"})


def test_register_describe_list_deregister(shared):
    ecs = shared.client()
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    a = ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=doc("i-aaa"), totalResources=RES,
                                        attributes=[{"name": "stack", "value": "prod"}], tags=[{"key": "k", "value": "v"}],
                                        versionInfo={"agentVersion": "1.80.0"})["containerInstance"]
    b = ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=doc("i-bbb", "m5.large", "us-east-1c"),
                                        totalResources=RES)["containerInstance"]
    assert a["ec2InstanceId"] == "i-aaa"
    assert a["status"] == "ACTIVE"
    assert a["containerInstanceArn"].startswith(f"arn:aws:ecs:us-east-1:000000000000:container-instance/{cluster}/")
    assert {"name": "stack", "value": "prod"} in a["attributes"]
    assert {"name": "ecs.instance-type", "value": "t3.medium"} in a["attributes"]
    c = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert c["registeredContainerInstancesCount"] == 2
    d = ecs.describe_container_instances(cluster=cluster, containerInstances=[a["containerInstanceArn"], "nope"], include=["TAGS"])
    assert d["containerInstances"][0]["tags"] == [{"key": "k", "value": "v"}]
    assert d["failures"][0]["reason"] == "MISSING"
    arns = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    assert set(arns) == {a["containerInstanceArn"], b["containerInstanceArn"]}
    # The cluster query language.
    f = lambda expr: ecs.list_container_instances(cluster=cluster, filter=expr)["containerInstanceArns"]
    assert f("attribute:ecs.instance-type == t3.medium") == [a["containerInstanceArn"]]
    assert f("attribute:ecs.instance-type =~ m5.*") == [b["containerInstanceArn"]]
    assert set(f("attribute:ecs.availability-zone in [us-east-1b, us-east-1c]")) == set(arns)
    assert f("ec2InstanceId in ['i-bbb'] and not(attribute:stack exists)") == [b["containerInstanceArn"]]
    assert f("attribute:stack == prod || runningTasksCount > 3") == [a["containerInstanceArn"]]
    with pytest.raises(ClientError) as e:
        f("attribute:x ===")
    assert error_code(e) == "InvalidParameterException"
    # Draining.
    u = ecs.update_container_instances_state(cluster=cluster, containerInstances=[b["containerInstanceArn"], "nope"], status="DRAINING")
    assert u["containerInstances"][0]["status"] == "DRAINING"
    assert u["failures"][0]["reason"] == "MISSING"
    assert ecs.list_container_instances(cluster=cluster, status="DRAINING")["containerInstanceArns"] == [b["containerInstanceArn"]]
    with pytest.raises(ClientError) as e:
        ecs.update_container_instances_state(cluster=cluster, containerInstances=[a["containerInstanceArn"]], status="REGISTERING")
    assert error_code(e) == "InvalidParameterException"
    r = ecs.deregister_container_instance(cluster=cluster, containerInstance=b["containerInstanceArn"])["containerInstance"]
    assert r["status"] == "INACTIVE"
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == [a["containerInstanceArn"]]
    with pytest.raises(ClientError) as e:
        ecs.deregister_container_instance(cluster=cluster, containerInstance=b["containerInstanceArn"])
    assert error_code(e) == "InvalidParameterException"


def test_deregister_with_tasks_needs_force(ecs):
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    ci = ecs.register_container_instance(cluster=cluster, totalResources=RES)["containerInstance"]
    fam = unique("f")
    ecs.register_task_definition(family=fam, containerDefinitions=[{"name": "a", "image": "i", "memory": 64}])
    t = ecs.run_task(cluster=cluster, taskDefinition=fam, launchType="EC2")["tasks"][0]
    assert t["containerInstanceArn"] == ci["containerInstanceArn"]
    with pytest.raises(ClientError) as e:
        ecs.deregister_container_instance(cluster=cluster, containerInstance=ci["containerInstanceArn"])
    assert e.value.response["Error"]["Message"] == "Found running tasks on the instance."
    ecs.deregister_container_instance(cluster=cluster, containerInstance=ci["containerInstanceArn"], force=True)
    assert ecs.describe_tasks(cluster=cluster, tasks=[t["taskArn"]])["tasks"][0]["lastStatus"] == "STOPPED"


def test_attributes(shared):
    ecs = shared.client()
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    ci = ecs.register_container_instance(cluster=cluster, totalResources=RES)["containerInstance"]
    arn = ci["containerInstanceArn"]
    r = shared.aws("ecs", "put-attributes", "--cluster", cluster, "--attributes", f"name=color,value=blue,targetId={arn}", f"name=gpu,targetId={arn}")
    assert len(r["attributes"]) == 2
    listed = ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="color")["attributes"]
    assert listed == [{"name": "color", "value": "blue", "targetType": "container-instance", "targetId": arn}]
    assert ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="color", attributeValue="red")["attributes"] == []
    ecs.delete_attributes(cluster=cluster, attributes=[{"name": "color", "targetId": arn}])
    assert ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="color")["attributes"] == []
    with pytest.raises(ClientError) as e:
        ecs.put_attributes(cluster=cluster, attributes=[{"name": "x", "value": "y", "targetId": "0" * 32}])
    assert error_code(e) == "TargetNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.put_attributes(cluster=cluster, attributes=[{"name": "bad name!", "value": "y", "targetId": arn}])
    assert error_code(e) == "InvalidParameterException"
    for i in range(9):  # with "gpu", 10 custom attributes: the limit
        ecs.put_attributes(cluster=cluster, attributes=[{"name": f"a{i}", "targetId": arn}])
    with pytest.raises(ClientError) as e:
        ecs.put_attributes(cluster=cluster, attributes=[{"name": "one-too-many", "targetId": arn}])
    assert error_code(e) == "AttributeLimitExceededException"
    names = {a["name"] for a in ecs.list_attributes(cluster=cluster, targetType="container-instance")["attributes"]}
    assert "one-too-many" not in names


def test_daemon_service_runs_one_task_per_instance(ecs):
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    for i in range(3):
        ecs.register_container_instance(cluster=cluster, totalResources=RES)
    fam = unique("f")
    ecs.register_task_definition(family=fam, containerDefinitions=[{"name": "a", "image": "i", "memory": 64}])
    s = ecs.create_service(cluster=cluster, serviceName="d", taskDefinition=fam, schedulingStrategy="DAEMON")["service"]
    assert s["schedulingStrategy"] == "DAEMON"
    assert s["deploymentConfiguration"]["minimumHealthyPercent"] == 0
    from conftest import wait_until
    wait_until(lambda: len(ecs.list_tasks(cluster=cluster, serviceName="d")["taskArns"]) == 3, what="3 daemon tasks")
    tasks = ecs.describe_tasks(cluster=cluster, tasks=ecs.list_tasks(cluster=cluster, serviceName="d")["taskArns"])["tasks"]
    assert len({t["containerInstanceArn"] for t in tasks}) == 3


def fleet(ecs, cluster, spec, cpu=1024, memory=2048):
    """Registers one instance per (instance id, type, zone): no agent runs their tasks, which
    is enough to see where RunTask places them."""
    res = [{"name": "CPU", "type": "INTEGER", "integerValue": cpu}, {"name": "MEMORY", "type": "INTEGER", "integerValue": memory}]
    out = []
    for iid, itype, az in spec:
        ci = ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=doc(iid, itype, az), totalResources=res)
        out.append(ci["containerInstance"])
    return out


def bridge_td(ecs, cpu=128, memory=256, **extra):
    fam = unique("f")
    container = {"name": "a", "image": "busybox", "cpu": cpu, "memory": memory}
    container.update(extra.pop("container", {}))
    ecs.register_task_definition(family=fam, networkMode="bridge", requiresCompatibilities=["EC2"],
                                 containerDefinitions=[container], **extra)
    return fam


def test_placement_strategies_constraints_and_failures(ecs):
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    spec = [("i-a1", "t2.micro", "us-east-1a"), ("i-a2", "t2.micro", "us-east-1a"), ("i-b1", "m5.large", "us-east-1b"),
            ("i-c1", "m5.large", "us-east-1c"), ("i-c2", "m5.large", "us-east-1c"), ("i-c3", "m5.large", "us-east-1c")]
    cis = fleet(ecs, cluster, spec)
    arn_of = {ci["ec2InstanceId"]: ci["containerInstanceArn"] for ci in cis}
    ec2_of = {v: k for k, v in arn_of.items()}
    zone_of = {iid: az for iid, _, az in spec}
    fam = bridge_td(ecs)

    def where(r):
        return [ec2_of[t["containerInstanceArn"]] for t in r["tasks"]]

    # Spread over zones, then instances: 2 per zone; zone b has one instance, which takes 2.
    spread = [{"type": "spread", "field": "attribute:ecs.availability-zone"}, {"type": "spread", "field": "instanceId"}]
    r = ecs.run_task(cluster=cluster, taskDefinition=fam, count=6, launchType="EC2", placementStrategy=spread)
    placed = where(r)
    assert sorted(zone_of[i] for i in placed) == ["us-east-1a"] * 2 + ["us-east-1b"] * 2 + ["us-east-1c"] * 2, placed
    assert placed.count("i-b1") == 2 and len({i for i in placed if zone_of[i] != "us-east-1b"}) == 4, placed
    # Binpack on memory: the instance with the least memory left (i-b1) takes them all.
    other = bridge_td(ecs)
    r = ecs.run_task(cluster=cluster, taskDefinition=other, count=3, launchType="EC2",
                     placementStrategy=[{"type": "binpack", "field": "memory"}])
    assert where(r) == ["i-b1"] * 3
    # memberOf with the cluster query language, and the task definition's own constraints.
    r = ecs.run_task(cluster=cluster, taskDefinition=fam, count=4, launchType="EC2",
                     placementConstraints=[{"type": "memberOf", "expression": "attribute:ecs.instance-type =~ t2.*"}])
    assert set(where(r)) <= {"i-a1", "i-a2"} and len(r["tasks"]) == 4
    r = ecs.run_task(cluster=cluster, taskDefinition=fam, count=2, launchType="EC2",
                     placementConstraints=[{"type": "memberOf", "expression": "ec2InstanceId in ['i-c3', 'i-a1'] and not(attribute:ecs.availability-zone == us-east-1a)"}])
    assert where(r) == ["i-c3", "i-c3"]
    pinned = bridge_td(ecs, placementConstraints=[{"type": "memberOf", "expression": "attribute:ecs.availability-zone == us-east-1c"}])
    r = ecs.run_task(cluster=cluster, taskDefinition=pinned, count=3, launchType="EC2",
                     placementConstraints=[{"type": "memberOf", "expression": "ec2InstanceId != i-c1"}])
    assert set(where(r)) <= {"i-c2", "i-c3"} and len(r["tasks"]) == 3
    r = ecs.run_task(cluster=cluster, taskDefinition=fam, count=1, launchType="EC2",
                     placementConstraints=[{"type": "memberOf", "expression": f"task:group == family:{other}"}])
    assert where(r) == ["i-b1"]
    # distinctInstance: one task of the group per instance; the rest fail with ECS's reason.
    solo = bridge_td(ecs)
    r = ecs.run_task(cluster=cluster, taskDefinition=solo, count=8, launchType="EC2",
                     placementConstraints=[{"type": "distinctInstance"}])
    assert sorted(where(r)) == sorted(arn_of)
    assert {f["reason"] for f in r["failures"]} == {"DistinctInstance placement constraint unsatisfied."}
    assert {f["arn"] for f in r["failures"]} == set(arn_of.values())
    # Resources: each instance is listed with why it cannot take the task.
    big = bridge_td(ecs, cpu=2048)
    r = ecs.run_task(cluster=cluster, taskDefinition=big, launchType="EC2")
    assert r["tasks"] == []
    assert sorted((f["arn"], f["reason"]) for f in r["failures"]) == sorted((a, "RESOURCE:CPU") for a in arn_of.values())
    huge = bridge_td(ecs, memory=4096)
    r = ecs.run_task(cluster=cluster, taskDefinition=huge, launchType="EC2")
    assert {f["reason"] for f in r["failures"]} == {"RESOURCE:MEMORY"}
    web = bridge_td(ecs, cpu=16, memory=16, container={"portMappings": [{"containerPort": 80, "hostPort": 8080}]})
    r = ecs.run_task(cluster=cluster, taskDefinition=web, count=7, launchType="EC2")
    assert sorted(where(r)) == sorted(arn_of), "one task per host port per instance"
    assert {f["reason"] for f in r["failures"]} == {"RESOURCE:PORTS"}
    # A capability no instance has (its agent would register it): ATTRIBUTE, naming it.
    syslog = bridge_td(ecs, container={"logConfiguration": {"logDriver": "syslog"}})
    r = ecs.run_task(cluster=cluster, taskDefinition=syslog, launchType="EC2")
    assert r["tasks"] == [] and {f["reason"] for f in r["failures"]} == {"ATTRIBUTE"}, r["failures"]
    assert r["failures"][0]["detail"] == "MissingAttribute: com.amazonaws.ecs.capability.logging-driver.syslog"
    # DRAINING instances take nothing and are not candidates.
    ecs.update_container_instances_state(cluster=cluster, containerInstances=[arn_of["i-c3"]], status="DRAINING")
    r = ecs.run_task(cluster=cluster, taskDefinition=fam, count=3, launchType="EC2",
                     placementConstraints=[{"type": "memberOf", "expression": "attribute:ecs.availability-zone == us-east-1c"}])
    assert set(where(r)) <= {"i-c1", "i-c2"} and len(r["tasks"]) == 3
    r = ecs.run_task(cluster=cluster, taskDefinition=fam, launchType="EC2",
                     placementConstraints=[{"type": "memberOf", "expression": "ec2InstanceId == i-c3"}])
    assert r["tasks"] == [] and arn_of["i-c3"] not in {f["arn"] for f in r["failures"]}
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=cluster, taskDefinition=fam, launchType="EC2", placementStrategy=[{"type": "spread", "field": "zone"}])
    assert error_code(e) == "InvalidParameterException"


def test_concurrent_run_task_never_overfills_an_instance(shared):
    """Eight clients race for 20 slots: exactly 20 tasks are placed, none twice on a slot."""
    import threading
    ecs = shared.client()
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    cis = fleet(ecs, cluster, [(f"i-{n}", "m5.large", "us-east-1a") for n in range(5)], cpu=1024, memory=8192)
    fam = bridge_td(ecs, cpu=256, memory=64)
    placed, errors = [], []

    def client():
        c = shared.client()
        try:
            while True:
                r = c.run_task(cluster=cluster, taskDefinition=fam, count=3, launchType="EC2",
                               placementStrategy=[{"type": "binpack", "field": "cpu"}])
                placed.extend(t["containerInstanceArn"] for t in r["tasks"])
                if len(r["tasks"]) < 3:
                    assert {f["reason"] for f in r["failures"]} == {"RESOURCE:CPU"}, r["failures"]
                    return
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(placed) == 20
    assert all(placed.count(ci["containerInstanceArn"]) == 4 for ci in cis)
    d = ecs.describe_container_instances(cluster=cluster, containerInstances=[ci["containerInstanceArn"] for ci in cis])
    for ci in d["containerInstances"]:
        remaining = {r["name"]: r.get("integerValue") for r in ci["remainingResources"]}
        assert remaining["CPU"] == 0 and ci["pendingTasksCount"] == 4, ci


def test_draining_an_instance_moves_its_service_tasks(ecs):
    from conftest import wait_until
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    fleet(ecs, cluster, [("i-1", "m5.large", "us-east-1a"), ("i-2", "m5.large", "us-east-1b"), ("i-3", "m5.large", "us-east-1c")])
    fam = bridge_td(ecs)
    ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=fam, desiredCount=2, launchType="EC2",
                       placementConstraints=[{"type": "distinctInstance"}])

    def service_tasks():
        arns = ecs.list_tasks(cluster=cluster, serviceName="web")["taskArns"]
        return ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []

    tasks = wait_until(lambda: (lambda ts: ts if len(ts) == 2 else None)(service_tasks()), what="2 service tasks")
    victim = tasks[0]["containerInstanceArn"]
    # A standalone task on the same instance: draining leaves it alone.
    standalone = ecs.start_task(cluster=cluster, taskDefinition=fam, containerInstances=[victim])["tasks"][0]
    ecs.update_container_instances_state(cluster=cluster, containerInstances=[victim], status="DRAINING")
    # Its service task had not started (no agent: PENDING), so it stops at once, and the
    # scheduler starts its replacement on the instance that has none.
    moved = lambda: (lambda ts: ts if len(ts) == 2 and all(t["containerInstanceArn"] != victim for t in ts) else None)(service_tasks())
    now = wait_until(moved, timeout=30, what="the service task moved off the DRAINING instance")
    assert len({t["containerInstanceArn"] for t in now}) == 2
    old = ecs.describe_tasks(cluster=cluster, tasks=[tasks[0]["taskArn"]])["tasks"][0]
    assert old["desiredStatus"] == "STOPPED" and old["stopCode"] == "ServiceSchedulerInitiated", old
    assert ecs.describe_tasks(cluster=cluster, tasks=[standalone["taskArn"]])["tasks"][0]["desiredStatus"] == "RUNNING"
    ecs.delete_service(cluster=cluster, service="web", force=True)
    ecs.stop_task(cluster=cluster, task=standalone["taskArn"])
