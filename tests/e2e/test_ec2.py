"""The EC2 calls ECS users make to find where tasks go: the default VPC, its default
subnets and its default security group, with boto3 and the AWS CLI (the Query protocol)."""


import pytest
from botocore.exceptions import ClientError

from conftest import error_code, error_message


@pytest.fixture
def ec2(shared):
    return shared.client("ec2")


def test_default_vpc_subnets_and_security_group(shared, ec2):
    [vpc] = ec2.describe_vpcs()["Vpcs"]
    assert vpc["IsDefault"] is True and vpc["CidrBlock"] == "172.31.0.0/16" and vpc["State"] == "available"
    assert vpc["VpcId"].startswith("vpc-") and vpc["OwnerId"] == "000000000000"
    assert ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"] == [vpc]

    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]},
                                            {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    assert [(s["AvailabilityZone"], s["CidrBlock"]) for s in subnets] == [
        ("us-east-1a", "172.31.0.0/20"), ("us-east-1b", "172.31.16.0/20"), ("us-east-1c", "172.31.32.0/20")]
    assert all(s["DefaultForAz"] and s["AvailableIpAddressCount"] == 4091 and s["VpcId"] == vpc["VpcId"] for s in subnets)
    b = ec2.describe_subnets(SubnetIds=[subnets[1]["SubnetId"]])["Subnets"]
    assert b == [subnets[1]]

    [sg] = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["default"]}])["SecurityGroups"]
    assert sg["VpcId"] == vpc["VpcId"] and sg["GroupId"].startswith("sg-") and sg["GroupName"] == "default"
    assert sg["IpPermissionsEgress"][0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]

    # Stable across calls and with the CLI; another region has another VPC.
    out = shared.aws("ec2", "describe-subnets", "--filters", "Name=availability-zone,Values=us-east-1c")
    assert [s["SubnetId"] for s in out["Subnets"]] == [subnets[2]["SubnetId"]]
    other = shared.client("ec2", region="eu-west-1").describe_vpcs()["Vpcs"][0]
    assert other["VpcId"] != vpc["VpcId"]


def test_errors(ec2):
    with pytest.raises(ClientError) as e:
        ec2.describe_subnets(SubnetIds=["subnet-0123456789abcdef0"])
    assert error_code(e) == "InvalidSubnetID.NotFound"
    assert error_message(e) == "The subnet ID 'subnet-0123456789abcdef0' does not exist"
    with pytest.raises(ClientError) as e:
        ec2.describe_vpcs(VpcIds=["vpc-1"])
    assert error_code(e) == "InvalidVpcID.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.describe_subnets(Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
    assert (error_code(e), error_message(e)) == ("InvalidParameterValue", "The filter 'no-such-filter' is invalid")
    with pytest.raises(ClientError) as e:
        ec2.describe_instances()
    assert error_code(e) == "InvalidAction"
