"""Clusters: CreateCluster, DescribeClusters, ListClusters, UpdateCluster,
UpdateClusterSettings, PutClusterCapacityProviders, DeleteCluster."""

import pytest
from botocore.exceptions import ClientError

from conftest import AWSVPC, Estiba, error_code, error_message, register_fargate, unique, wait_until


def test_create_describe_list_with_the_cli(shared):
    name = unique("c")
    c = shared.aws("ecs", "create-cluster", "--cluster-name", name, "--tags", "key=team,value=core")["cluster"]
    assert c["clusterArn"] == f"arn:aws:ecs:us-east-1:000000000000:cluster/{name}"
    assert c["status"] == "ACTIVE"
    assert c["settings"] == [{"name": "containerInsights", "value": "disabled"}]
    assert c["tags"] == [{"key": "team", "value": "core"}]
    for k in ("registeredContainerInstancesCount", "runningTasksCount", "pendingTasksCount", "activeServicesCount"):
        assert c[k] == 0
    # Creating it again returns the same cluster.
    again = shared.aws("ecs", "create-cluster", "--cluster-name", name)["cluster"]
    assert again["clusterArn"] == c["clusterArn"]
    arns = shared.aws("ecs", "list-clusters")["clusterArns"]
    assert c["clusterArn"] in arns
    d = shared.aws("ecs", "describe-clusters", "--clusters", name, "nope-" + name)
    assert [x["clusterName"] for x in d["clusters"]] == [name]
    assert d["failures"] == [{"arn": f"arn:aws:ecs:us-east-1:000000000000:cluster/nope-{name}", "reason": "MISSING"}]
    # Tags and settings only with include.
    assert d["clusters"][0]["tags"] == []
    assert "settings" not in d["clusters"][0]
    d = shared.aws("ecs", "describe-clusters", "--clusters", c["clusterArn"], "--include", "TAGS", "SETTINGS", "STATISTICS")
    cl = d["clusters"][0]
    assert cl["tags"] == [{"key": "team", "value": "core"}]
    assert cl["settings"][0]["name"] == "containerInsights"
    assert {s["name"] for s in cl["statistics"]} >= {"runningFargateTasksCount", "pendingEC2TasksCount", "activeFargateServiceCount"}


def test_default_cluster_is_not_implicit(estiba):
    """As in ECS: calls without a cluster mean `default`, which must exist (CreateCluster
    without a name makes it)."""
    ecs = estiba.client()
    d = ecs.describe_clusters()
    assert d["failures"][0]["reason"] == "MISSING"
    register_fargate(ecs, "implicit")
    with pytest.raises(ClientError) as e:
        ecs.run_task(taskDefinition="implicit", networkConfiguration=AWSVPC)
    assert error_code(e) == "ClusterNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.create_service(serviceName="s", taskDefinition="implicit", desiredCount=1, networkConfiguration=AWSVPC)
    assert error_code(e) == "ClusterNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.register_container_instance()
    assert error_code(e) == "ClusterNotFoundException"
    assert ecs.describe_clusters()["failures"][0]["reason"] == "MISSING"
    assert ecs.create_cluster()["cluster"]["clusterName"] == "default"
    ecs.run_task(taskDefinition="implicit", networkConfiguration=AWSVPC)
    d = ecs.describe_clusters()
    assert d["clusters"][0]["clusterName"] == "default"
    assert d["clusters"][0]["pendingTasksCount"] == 1


def test_counts_follow_tasks_and_services(ecs):
    name = unique("c")
    ecs.create_cluster(clusterName=name)
    fam = unique("f")
    register_fargate(ecs, fam)
    ecs.run_task(cluster=name, taskDefinition=fam, count=3, networkConfiguration=AWSVPC)
    ecs.create_service(cluster=name, serviceName="s", taskDefinition=fam, desiredCount=0, networkConfiguration=AWSVPC)
    c = ecs.describe_clusters(clusters=[name], include=["STATISTICS"])["clusters"][0]
    assert (c["pendingTasksCount"], c["runningTasksCount"], c["activeServicesCount"]) == (3, 0, 1)
    stats = {s["name"]: s["value"] for s in c["statistics"]}
    assert stats["pendingFargateTasksCount"] == "3"
    assert stats["activeFargateServiceCount"] == "1"


def test_update_cluster_and_settings(ecs):
    name = unique("c")
    ecs.create_cluster(clusterName=name)
    c = ecs.update_cluster_settings(cluster=name, settings=[{"name": "containerInsights", "value": "enabled"}])["cluster"]
    assert c["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    c = ecs.update_cluster(
        cluster=name,
        configuration={"executeCommandConfiguration": {"logging": "DEFAULT"}},
        settings=[{"name": "containerInsights", "value": "enhanced"}],
    )["cluster"]
    assert c["configuration"]["executeCommandConfiguration"]["logging"] == "DEFAULT"
    assert c["settings"][0]["value"] == "enhanced"
    with pytest.raises(ClientError) as e:
        ecs.update_cluster_settings(cluster=name, settings=[{"name": "containerInsights", "value": "maybe"}])
    assert error_code(e) == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.update_cluster(cluster=unique("ghost"), settings=[])
    assert error_code(e) == "ClusterNotFoundException"
    assert error_message(e) == "Cluster not found."


def test_put_cluster_capacity_providers(ecs):
    name = unique("c")
    ecs.create_cluster(clusterName=name)
    strategy = [{"capacityProvider": "FARGATE", "weight": 1, "base": 1}, {"capacityProvider": "FARGATE_SPOT", "weight": 3}]
    c = ecs.put_cluster_capacity_providers(
        cluster=name, capacityProviders=["FARGATE", "FARGATE_SPOT"], defaultCapacityProviderStrategy=strategy
    )["cluster"]
    assert c["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    assert c["defaultCapacityProviderStrategy"][1] == {"capacityProvider": "FARGATE_SPOT", "weight": 3, "base": 0}
    with pytest.raises(ClientError) as e:
        ecs.put_cluster_capacity_providers(
            cluster=name, capacityProviders=["FARGATE"], defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
        )
    assert error_code(e) == "InvalidParameterException"
    assert "not associated with the cluster" in error_message(e)
    with pytest.raises(ClientError) as e:
        ecs.put_cluster_capacity_providers(cluster=name, capacityProviders=["nope"], defaultCapacityProviderStrategy=[])
    assert error_code(e) == "InvalidParameterException"
    # The default strategy places tasks without a launch type.
    fam = unique("f")
    register_fargate(ecs, fam)
    tasks = ecs.run_task(cluster=name, taskDefinition=fam, count=4, networkConfiguration=AWSVPC)["tasks"]
    providers = [t["capacityProviderName"] for t in tasks]
    assert providers.count("FARGATE") >= 1, "the base goes first"
    assert providers.count("FARGATE_SPOT") >= 2, "then tasks follow the 1:3 weights"
    tasks = ecs.run_task(cluster=name, taskDefinition=fam, count=9, networkConfiguration=AWSVPC)["tasks"]
    assert [t["capacityProviderName"] for t in tasks].count("FARGATE_SPOT") in (6, 7)
    assert {t["launchType"] for t in tasks} == {"FARGATE"}


def test_delete_cluster_rules(ecs):
    name = unique("c")
    ecs.create_cluster(clusterName=name)
    fam = unique("f")
    register_fargate(ecs, fam)
    ecs.create_service(cluster=name, serviceName="s", taskDefinition=fam, desiredCount=0, networkConfiguration=AWSVPC)
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=name)
    assert error_code(e) == "ClusterContainsServicesException"
    ecs.delete_service(cluster=name, service="s")
    task = ecs.run_task(cluster=name, taskDefinition=fam, networkConfiguration=AWSVPC)["tasks"][0]
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=name)
    assert error_code(e) == "ClusterContainsTasksException"
    ecs.stop_task(cluster=name, task=task["taskArn"])
    ci = ecs.register_container_instance(cluster=name)["containerInstance"]
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=name)
    assert error_code(e) == "ClusterContainsContainerInstancesException"
    ecs.deregister_container_instance(cluster=name, containerInstance=ci["containerInstanceArn"])
    c = ecs.delete_cluster(cluster=name)["cluster"]
    assert c["status"] == "INACTIVE"
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "INACTIVE"
    # Deleted clusters stay discoverable for a while, as in ECS.
    assert c["clusterArn"] in ecs.list_clusters()["clusterArns"]
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=name)
    assert error_code(e) == "ClusterNotFoundException"
    # The name can be used again.
    assert ecs.create_cluster(clusterName=name)["cluster"]["status"] == "ACTIVE"


def test_list_clusters_pages(estiba):
    ecs = estiba.client()
    names = [f"p{i:02d}" for i in range(7)]
    for n in names:
        ecs.create_cluster(clusterName=n)
    seen, token = [], None
    while True:
        kw = {"maxResults": 3}
        if token:
            kw["nextToken"] = token
        r = ecs.list_clusters(**kw)
        assert len(r["clusterArns"]) <= 3
        seen += r["clusterArns"]
        token = r.get("nextToken")
        if not token:
            break
    assert [a.rsplit("/", 1)[1] for a in seen] == names
    # The paginator of boto3 follows the same tokens.
    pages = estiba.client().get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 2})
    assert sum(len(p["clusterArns"]) for p in pages) == 7
    with pytest.raises(ClientError) as e:
        ecs.list_clusters(maxResults=101)
    assert error_code(e) == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.list_clusters(nextToken="garbage!")
    assert error_code(e) == "InvalidParameterException"


def test_bad_cluster_names(ecs):
    for bad in ["has space", "a" * 256, "slash/name"]:
        with pytest.raises(ClientError) as e:
            ecs.create_cluster(clusterName=bad)
        assert error_code(e) == "InvalidParameterException"
    assert not any("has space" in a for a in ecs.list_clusters()["clusterArns"])


def test_regions_and_accounts_are_separate(shared):
    name = unique("c")
    shared.client(region="eu-west-1").create_cluster(clusterName=name)
    us = shared.client(region="us-east-1").describe_clusters(clusters=[name])
    assert us["failures"][0]["reason"] == "MISSING"
    eu = shared.client(region="eu-west-1").describe_clusters(clusters=[name])["clusters"][0]
    assert eu["clusterArn"] == f"arn:aws:ecs:eu-west-1:000000000000:cluster/{name}"
    # A 12-digit access key id is the account.
    other = shared.client(region="eu-west-1", access_key="111122223333")
    assert other.describe_clusters(clusters=[name])["failures"][0]["reason"] == "MISSING"
    c = other.create_cluster(clusterName=name)["cluster"]
    assert c["clusterArn"] == f"arn:aws:ecs:eu-west-1:111122223333:cluster/{name}"


def test_inactive_clusters_and_services_are_forgotten_after_their_retention(tmp_path):
    """Issue 14.20: INACTIVE clusters and services were kept forever (--inactive-retention)."""
    e = Estiba(str(tmp_path / "srv"), extra_args=["--inactive-retention", "1s"]).start()
    try:
        ecs = e.client()
        gone = unique("c")
        arn = ecs.create_cluster(clusterName=gone)["cluster"]["clusterArn"]
        keep = unique("c")
        ecs.create_cluster(clusterName=keep)
        register_fargate(ecs, "f")
        ecs.create_service(cluster=keep, serviceName="s", taskDefinition="f", desiredCount=0, networkConfiguration=AWSVPC)
        ecs.delete_service(cluster=keep, service="s")
        ecs.delete_cluster(cluster=gone)
        assert arn in ecs.list_clusters()["clusterArns"], "listed while INACTIVE"
        # Housekeeping runs every 10 s: the first pass sees them INACTIVE, a later one forgets them.
        wait_until(lambda: arn not in ecs.list_clusters()["clusterArns"], timeout=40, interval=0.5, what="the cluster forgotten")
        assert ecs.describe_clusters(clusters=[gone])["failures"][0]["reason"] == "MISSING"
        wait_until(lambda: ecs.describe_services(cluster=keep, services=["s"])["failures"], timeout=40, interval=0.5,
                   what="the service forgotten")
        with pytest.raises(ClientError) as x:
            ecs.list_service_deployments(cluster=keep, service="s")
        assert error_code(x) == "ServiceNotFoundException"
        # The name can be used again.
        assert ecs.create_cluster(clusterName=gone)["cluster"]["status"] == "ACTIVE"
    finally:
        e.stop()
