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
