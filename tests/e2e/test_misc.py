"""Capacity providers, tags and account settings."""

import pytest
from botocore.exceptions import ClientError

from conftest import AWSVPC, error_code, error_message, register_fargate, unique, wait_until

ASG = {"autoScalingGroupArn": "arn:aws:autoscaling:us-east-1:000000000000:autoScalingGroup:1:autoScalingGroupName/asg",
       "managedScaling": {"status": "ENABLED"}}


def test_capacity_providers(shared):
    ecs = shared.client()
    d = ecs.describe_capacity_providers(capacityProviders=["FARGATE", "FARGATE_SPOT"])["capacityProviders"]
    assert [c["name"] for c in d] == ["FARGATE", "FARGATE_SPOT"]
    assert d[0]["status"] == "ACTIVE"
    name = unique("cp")
    c = shared.aws("ecs", "create-capacity-provider", "--name", name, "--auto-scaling-group-provider",
                   f"autoScalingGroupArn={ASG['autoScalingGroupArn']},managedScaling={{status=ENABLED}}",
                   "--tags", "key=a,value=b")["capacityProvider"]
    assert c["capacityProviderArn"] == f"arn:aws:ecs:us-east-1:000000000000:capacity-provider/{name}"
    assert c["status"] == "ACTIVE"
    asg = c["autoScalingGroupProvider"]
    assert asg["managedScaling"] == {"status": "ENABLED", "targetCapacity": 100, "minimumScalingStepSize": 1,
                                     "maximumScalingStepSize": 10000, "instanceWarmupPeriod": 300}
    assert asg["managedTerminationProtection"] == "DISABLED"
    with pytest.raises(ClientError) as e:
        ecs.create_capacity_provider(name=name, autoScalingGroupProvider=ASG)
    assert error_code(e) == "ClientException"
    for bad in ["fargate-x", "ecs-thing", "aws1"]:
        with pytest.raises(ClientError) as e:
            ecs.create_capacity_provider(name=bad, autoScalingGroupProvider=ASG)
        assert error_message(e) == "The capacity provider name cannot start with 'aws', 'ecs', or 'fargate'."
    u = ecs.update_capacity_provider(name=name, autoScalingGroupProvider={"managedScaling": {"targetCapacity": 80}})["capacityProvider"]
    # Members not given keep their values.
    assert u["autoScalingGroupProvider"]["managedScaling"]["targetCapacity"] == 80
    assert u["autoScalingGroupProvider"]["managedScaling"]["status"] == "ENABLED"
    assert u["autoScalingGroupProvider"]["managedTerminationProtection"] == "DISABLED"
    got = ecs.describe_capacity_providers(capacityProviders=[name, "nope"], include=["TAGS"])
    assert got["capacityProviders"][0]["tags"] == [{"key": "a", "value": "b"}]
    assert got["failures"][0]["reason"] == "MISSING"
    # In use by a cluster: cannot be deleted.
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster, capacityProviders=[name])
    with pytest.raises(ClientError) as e:
        ecs.delete_capacity_provider(capacityProvider=name)
    assert error_code(e) == "ClientException"
    ecs.put_cluster_capacity_providers(cluster=cluster, capacityProviders=[], defaultCapacityProviderStrategy=[])
    gone = ecs.delete_capacity_provider(capacityProvider=name)["capacityProvider"]
    # As in ECS: ACTIVE while the deletion is in progress, then INACTIVE.
    assert (gone["status"], gone["updateStatus"]) == ("ACTIVE", "DELETE_IN_PROGRESS")
    with pytest.raises(ClientError) as e:
        ecs.create_cluster(clusterName=unique("c"), capacityProviders=[name])
    assert error_code(e) == "InvalidParameterException"
    def inactive():
        cp = ecs.describe_capacity_providers(capacityProviders=[name])["capacityProviders"]
        return cp and cp[0]["status"] == "INACTIVE" and cp[0]
    assert wait_until(inactive, timeout=30, what="INACTIVE")["updateStatus"] == "DELETE_COMPLETE"
    with pytest.raises(ClientError) as e:
        ecs.delete_capacity_provider(capacityProvider="FARGATE")
    assert error_code(e) == "InvalidParameterException"


def test_tags_on_every_resource(shared):
    ecs = shared.client()
    cluster = unique("c")
    carn = ecs.create_cluster(clusterName=cluster)["cluster"]["clusterArn"]
    fam = unique("f")
    tdarn = register_fargate(ecs, fam)["taskDefinitionArn"]
    tarn = ecs.run_task(cluster=cluster, taskDefinition=fam, networkConfiguration=AWSVPC)["tasks"][0]["taskArn"]
    sarn = ecs.create_service(cluster=cluster, serviceName="s", taskDefinition=fam, desiredCount=0, networkConfiguration=AWSVPC)["service"]["serviceArn"]
    ciarn = ecs.register_container_instance(cluster=cluster)["containerInstance"]["containerInstanceArn"]
    for arn in [carn, tdarn, tarn, sarn, ciarn]:
        shared.aws("ecs", "tag-resource", "--resource-arn", arn, "--tags", "key=env,value=dev", "key=team,value=a")
        ecs.tag_resource(resourceArn=arn, tags=[{"key": "team", "value": "b"}])
        ecs.untag_resource(resourceArn=arn, tagKeys=["env"])
        assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "team", "value": "b"}], arn
    with pytest.raises(ClientError) as e:
        ecs.tag_resource(resourceArn=f"arn:aws:ecs:us-east-1:000000000000:cluster/{unique('ghost')}", tags=[{"key": "a", "value": "b"}])
    assert error_code(e) == "ClusterNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.list_tags_for_resource(resourceArn=f"arn:aws:ecs:us-east-1:000000000000:task/{cluster}/{'0' * 32}")
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.list_tags_for_resource(resourceArn="not-an-arn")
    assert error_code(e) == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.tag_resource(resourceArn=carn, tags=[{"key": "aws:reserved", "value": "x"}])
    assert error_code(e) == "InvalidParameterException"
    too_many = [{"key": f"k{i}", "value": "v"} for i in range(50)]
    with pytest.raises(ClientError) as e:
        ecs.tag_resource(resourceArn=carn, tags=too_many)
    assert error_code(e) == "InvalidParameterException"
    assert len(ecs.list_tags_for_resource(resourceArn=carn)["tags"]) == 1


def test_account_settings(estiba):
    ecs = estiba.client()
    root = "arn:aws:iam::000000000000:root"
    assert ecs.list_account_settings()["settings"] == []
    cli = estiba.aws("ecs", "put-account-setting", "--name", "containerInsights", "--value", "enabled")["setting"]
    # Older CLIs do not know the `type` member and leave it out.
    assert {k: v for k, v in cli.items() if k != "type"} == {"name": "containerInsights", "value": "enabled", "principalArn": root}
    s = ecs.put_account_setting(name="containerInsights", value="enabled")["setting"]
    assert s == {"name": "containerInsights", "value": "enabled", "principalArn": root, "type": "user"}
    role = "arn:aws:iam::000000000000:role/deployer"
    ecs.put_account_setting(name="containerInsights", value="disabled", principalArn=role)
    d = ecs.put_account_setting_default(name="fargateTaskRetirementWaitPeriod", value="14")["setting"]
    assert d["value"] == "14"
    with pytest.raises(ClientError) as e:
        ecs.put_account_setting(name="fargateTaskRetirementWaitPeriod", value="14")
    assert error_code(e) == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.put_account_setting(name="containerInsights", value="perhaps")
    assert error_code(e) == "InvalidParameterException"
    mine = ecs.list_account_settings(name="containerInsights")["settings"]
    assert mine == [s]
    eff = {x["name"]: x for x in ecs.list_account_settings(effectiveSettings=True, principalArn=role, maxResults=10)["settings"]}
    assert eff["containerInsights"]["value"] == "disabled" and eff["containerInsights"]["principalArn"] == role
    eff_all = []
    for page in ecs.get_paginator("list_account_settings").paginate(effectiveSettings=True, principalArn=role):
        eff_all += page["settings"]
    eff = {x["name"]: x for x in eff_all}
    assert eff["fargateTaskRetirementWaitPeriod"]["value"] == "14"
    assert eff["serviceLongArnFormat"] == {"name": "serviceLongArnFormat", "value": "enabled", "principalArn": root, "type": "aws_managed"}
    gone = ecs.delete_account_setting(name="containerInsights", principalArn=role)["setting"]
    assert gone["principalArn"] == role
    eff = {x["name"]: x for x in ecs.list_account_settings(effectiveSettings=True, principalArn=role, name="containerInsights")["settings"]}
    assert eff["containerInsights"]["value"] == "enabled"
    with pytest.raises(ClientError) as e:
        ecs.delete_account_setting(name="containerInsights", principalArn=role)
    assert error_code(e) == "InvalidParameterException"
