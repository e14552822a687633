"""AWS Cloud Map (servicediscovery, AWS JSON 1.1): namespaces and their operations, services,
instances, health, DiscoverInstances and tags, with boto3 and the AWS CLI, success and error
paths. DiscoverInstances is sent to `data-<endpoint host>` by the SDKs (a host prefix):
the tests use the recipes README.md gives (boto3's `inject_host_prefix=False` or
`AWS_DISABLE_HOST_PREFIX_INJECTION`, the CLI through estiba as its HTTP proxy)."""

import json
import re
import time
import urllib.error
import urllib.request

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from conftest import error_code, error_message, unique, wait_until

TARGET = "Route53AutoNaming_v20170314."


def client(server, **config):
    return boto3.client(
        "servicediscovery",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(retries={"max_attempts": 1}, inject_host_prefix=False, **config),
    )


@pytest.fixture
def sd(shared):
    return client(shared)


def done(sd, op_id):
    """Waits for an operation to succeed; returns it."""
    return wait_until(
        lambda: (lambda o: o if o["Status"] == "SUCCESS" else None)(sd.get_operation(OperationId=op_id)["Operation"]),
        timeout=10,
        what=f"operation {op_id} SUCCESS",
    )


def http_namespace(sd, name=None, **kw):
    name = name or unique("ns")
    op = sd.create_http_namespace(Name=name, **kw)["OperationId"]
    return done(sd, op)["Targets"]["NAMESPACE"], name


def private_namespace(sd, name=None, **kw):
    name = name or unique("ns") + ".local"
    op = sd.create_private_dns_namespace(Name=name, Vpc="vpc-12345678", **kw)["OperationId"]
    return done(sd, op)["Targets"]["NAMESPACE"], name


def raw(server, op, body):
    req = urllib.request.Request(server.endpoint + "/", data=json.dumps(body).encode(), method="POST")
    req.add_header("X-Amz-Target", TARGET + op)
    req.add_header("Content-Type", "application/x-amz-json-1.1")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def expect(code, fn, *args, **kw):
    with pytest.raises(ClientError) as e:
        fn(*args, **kw)
    assert error_code(e) == code, error_message(e)
    return error_message(e)


# Namespaces.


def test_namespace_creation_is_an_operation_that_advances(sd):
    name = unique("ns")
    op_id = sd.create_http_namespace(Name=name, Description="shop")["OperationId"]
    assert re.fullmatch(r"[a-z0-9]{32}-[a-z0-9]{8}", op_id)
    order = ["SUBMITTED", "PENDING", "SUCCESS"]
    seen = []
    deadline = time.time() + 10
    while time.time() < deadline:
        op = sd.get_operation(OperationId=op_id)["Operation"]
        if not seen or seen[-1] != op["Status"]:
            seen.append(op["Status"])
        if op["Status"] == "SUCCESS":
            break
        time.sleep(0.02)
    assert seen[-1] == "SUCCESS" and seen == sorted(seen, key=order.index), seen
    assert op["Type"] == "CREATE_NAMESPACE" and op["OwnerAccount"] == "000000000000"
    assert op["UpdateDate"] >= op["CreateDate"]
    ns_id = op["Targets"]["NAMESPACE"]
    assert re.fullmatch(r"ns-[a-z0-9]{16}", ns_id)

    ns = sd.get_namespace(Id=ns_id)["Namespace"]
    assert ns["Name"] == name and ns["Type"] == "HTTP" and ns["Description"] == "shop"
    assert ns["Arn"] == f"arn:aws:servicediscovery:us-east-1:000000000000:namespace/{ns_id}"
    assert ns["Properties"]["HttpProperties"]["HttpName"] == name
    assert ns["ServiceCount"] == 0
    assert sd.get_namespace(Id=ns["Arn"])["Namespace"]["Id"] == ns_id
    assert any(n["Id"] == ns_id for n in sd.list_namespaces()["Namespaces"])


def test_namespace_names_are_unique_and_creator_request_ids_repeat(sd):
    name = unique("ns")
    first = sd.create_http_namespace(Name=name, CreatorRequestId="req-" + name)["OperationId"]
    again = sd.create_http_namespace(Name=name, CreatorRequestId="req-" + name)["OperationId"]
    assert again == first
    expect("NamespaceAlreadyExists", sd.create_http_namespace, Name=name)
    expect("NamespaceAlreadyExists", sd.create_private_dns_namespace, Name=name, Vpc="vpc-1")
    expect("DuplicateRequest", sd.create_http_namespace, Name=unique("ns"), CreatorRequestId="req-" + name)
    assert len(sd.list_namespaces(Filters=[{"Name": "NAME", "Values": [name]}])["Namespaces"]) == 1


def test_private_and_public_dns_namespaces(sd, shared):
    ns_id, name = private_namespace(sd, Properties={"DnsProperties": {"SOA": {"TTL": 60}}})
    ns = sd.get_namespace(Id=ns_id)["Namespace"]
    assert ns["Type"] == "DNS_PRIVATE"
    assert ns["Properties"]["DnsProperties"]["SOA"] == {"TTL": 60}
    assert re.fullmatch(r"Z[A-Z0-9]{20}", ns["Properties"]["DnsProperties"]["HostedZoneId"])
    op = sd.update_private_dns_namespace(
        Id=ns_id, Namespace={"Description": "new", "Properties": {"DnsProperties": {"SOA": {"TTL": 120}}}}
    )["OperationId"]
    assert done(sd, op)["Type"] == "UPDATE_NAMESPACE"
    ns = sd.get_namespace(Id=ns_id)["Namespace"]
    assert ns["Description"] == "new" and ns["Properties"]["DnsProperties"]["SOA"] == {"TTL": 120}
    expect("InvalidInput", sd.update_http_namespace, Id=ns_id, Namespace={"Description": "x"})

    pub = unique("pub") + ".example.com"
    pub_id = done(sd, sd.create_public_dns_namespace(Name=pub)["OperationId"])["Targets"]["NAMESPACE"]
    assert sd.get_namespace(Id=pub_id)["Namespace"]["Type"] == "DNS_PUBLIC"
    done(sd, sd.update_public_dns_namespace(Id=pub_id, Namespace={"Description": "p"})["OperationId"])
    assert sd.get_namespace(Id=pub_id)["Namespace"]["Description"] == "p"

    # Vpc is required; names may not look like ARNs; public names are domain names.
    status, body = raw(shared, "CreatePrivateDnsNamespace", {"Name": unique("x")})
    assert (status, body["__type"]) == (400, "InvalidInput") and "Vpc" in body["message"]
    expect("InvalidInput", sd.create_private_dns_namespace, Name="arn:aws:x", Vpc="vpc-1")
    expect("InvalidInput", sd.create_http_namespace, Name="arn:aws:x")
    expect("InvalidInput", sd.create_public_dns_namespace, Name="not a domain")


def test_list_namespaces_filters_and_pages(sd):
    prefix = unique("lst")
    http_id, _ = http_namespace(sd, prefix + "-a")
    dns_id, _ = private_namespace(sd, prefix + "-b.local")
    begins = {"Name": "NAME", "Condition": "BEGINS_WITH", "Values": [prefix]}
    ids = lambda out: [n["Id"] for n in out["Namespaces"]]
    assert sorted(ids(sd.list_namespaces(Filters=[begins]))) == sorted([http_id, dns_id])
    assert ids(sd.list_namespaces(Filters=[begins, {"Name": "TYPE", "Values": ["HTTP"]}])) == [http_id]
    both = {"Name": "TYPE", "Condition": "IN", "Values": ["HTTP", "DNS_PRIVATE"]}
    assert len(ids(sd.list_namespaces(Filters=[begins, both]))) == 2
    assert ids(sd.list_namespaces(Filters=[{"Name": "HTTP_NAME", "Values": [prefix + "-b.local"]}])) == [dns_id]
    first = sd.list_namespaces(Filters=[begins], MaxResults=1)
    second = sd.list_namespaces(Filters=[begins], MaxResults=1, NextToken=first["NextToken"])
    assert len(first["Namespaces"]) == len(second["Namespaces"]) == 1 and "NextToken" not in second
    assert {first["Namespaces"][0]["Id"], second["Namespaces"][0]["Id"]} == {http_id, dns_id}
    expect("InvalidInput", sd.list_namespaces, Filters=[{"Name": "TYPE", "Condition": "BEGINS_WITH", "Values": ["H"]}])
    expect("InvalidInput", sd.list_namespaces, MaxResults=1000)


def test_namespace_deletion(sd):
    ns_id, name = http_namespace(sd)
    svc = sd.create_service(Name="web", NamespaceId=ns_id)["Service"]
    assert sd.get_namespace(Id=ns_id)["Namespace"]["ServiceCount"] == 1
    expect("ResourceInUse", sd.delete_namespace, Id=ns_id)
    sd.delete_service(Id=svc["Id"])
    op = done(sd, sd.delete_namespace(Id=ns_id)["OperationId"])
    assert op["Type"] == "DELETE_NAMESPACE" and op["Targets"]["NAMESPACE"] == ns_id
    expect("NamespaceNotFound", sd.get_namespace, Id=ns_id)
    expect("NamespaceNotFound", sd.delete_namespace, Id=ns_id)
    expect("NamespaceNotFound", sd.update_http_namespace, Id=ns_id, Namespace={"Description": "x"})
    # The name is free again.
    http_namespace(sd, name)


# Services.


def test_services_in_dns_and_http_namespaces(sd):
    ns_id, ns_name = private_namespace(sd)
    svc = sd.create_service(
        Name="web",
        NamespaceId=ns_id,
        Description="front",
        DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 60}, {"Type": "SRV", "TTL": 30}]},
        HealthCheckCustomConfig={},
        Tags=[{"Key": "team", "Value": "a"}],
    )["Service"]
    assert re.fullmatch(r"srv-[a-z0-9]{16}", svc["Id"])
    assert svc["Arn"] == f"arn:aws:servicediscovery:us-east-1:000000000000:service/{svc['Id']}"
    assert svc["Type"] == "DNS_HTTP" and svc["NamespaceId"] == ns_id
    assert svc["DnsConfig"]["RoutingPolicy"] == "MULTIVALUE"
    assert svc["HealthCheckCustomConfig"] == {"FailureThreshold": 1}
    got = sd.get_service(Id=svc["Id"])["Service"]
    assert got["Name"] == "web" and got["InstanceCount"] == 0 and got["Description"] == "front"
    assert sd.get_service(Id=svc["Arn"])["Service"]["Id"] == svc["Id"]
    expect("ServiceAlreadyExists", sd.create_service, Name="web", NamespaceId=ns_id, DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 60}]})

    http_only = sd.create_service(Name="api", NamespaceId=ns_id, Type="HTTP")["Service"]
    assert http_only["Type"] == "HTTP" and "DnsConfig" not in http_only
    listed = sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [ns_id]}])["Services"]
    assert sorted(s["Name"] for s in listed) == ["api", "web"]
    assert sd.get_namespace(Id=ns_id)["Namespace"]["ServiceCount"] == 2
    page = sd.list_services(Filters=[{"Name": "NAMESPACE_ID", "Values": [ns_id]}], MaxResults=1)
    assert len(page["Services"]) == 1 and page["NextToken"]
    expect("InvalidInput", sd.list_services, Filters=[{"Name": "NAMESPACE_ID", "Condition": "IN", "Values": [ns_id]}])

    h_id, _ = http_namespace(sd)
    h = sd.create_service(Name="web", NamespaceId=h_id)["Service"]
    assert h["Type"] == "HTTP"
    expect("InvalidInput", sd.create_service, Name="dns", NamespaceId=h_id, DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 1}]})


def test_service_configuration_errors(sd, shared):
    ns_id, _ = private_namespace(sd)
    a = {"DnsRecords": [{"Type": "A", "TTL": 60}]}
    expect("NamespaceNotFound", sd.create_service, Name="x", NamespaceId="ns-0000000000000000", DnsConfig=a)
    expect("InvalidInput", sd.create_service, Name="x")
    expect("InvalidInput", sd.create_service, Name="x", NamespaceId=ns_id)  # a DNS namespace needs DnsConfig
    for bad in [
        {"DnsRecords": [{"Type": "A", "TTL": 60}, {"Type": "A", "TTL": 10}]},
        {"DnsRecords": [{"Type": "CNAME", "TTL": 60}]},  # CNAME routes WEIGHTED
        {"DnsRecords": [{"Type": "CNAME", "TTL": 60}, {"Type": "A", "TTL": 60}], "RoutingPolicy": "WEIGHTED"},
        {"DnsRecords": []},
    ]:
        expect("InvalidInput", sd.create_service, Name=unique("x"), NamespaceId=ns_id, DnsConfig=bad)
    cname = sd.create_service(
        Name="c", NamespaceId=ns_id, DnsConfig={"DnsRecords": [{"Type": "CNAME", "TTL": 60}], "RoutingPolicy": "WEIGHTED"}
    )["Service"]
    assert cname["DnsConfig"]["RoutingPolicy"] == "WEIGHTED"
    hc = {"Type": "HTTP", "ResourcePath": "/health"}
    msg = expect("InvalidInput", sd.create_service, Name="h", NamespaceId=ns_id, DnsConfig=a, HealthCheckConfig=hc)
    assert "public" in msg
    pub_id = done(sd, sd.create_public_dns_namespace(Name=unique("p") + ".example.com")["OperationId"])["Targets"]["NAMESPACE"]
    svc = sd.create_service(Name="h", NamespaceId=pub_id, DnsConfig=a, HealthCheckConfig={"Type": "HTTPS"})["Service"]
    assert svc["HealthCheckConfig"] == {"Type": "HTTPS", "ResourcePath": "/", "FailureThreshold": 1}
    expect("InvalidInput", sd.create_service, Name="h2", NamespaceId=pub_id, DnsConfig=a, HealthCheckConfig=hc, HealthCheckCustomConfig={})
    expect("InvalidInput", sd.create_service, Name="h3", NamespaceId=pub_id, DnsConfig=a, HealthCheckConfig={"Type": "TCP", "ResourcePath": "/x"})
    expect("InvalidInput", sd.create_service, Name="-bad-", NamespaceId=ns_id, DnsConfig=a)
    status, body = raw(shared, "CreateService", {"Name": "x", "NamespaceId": ns_id, "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": -1}]}})
    assert (status, body["__type"]) == (400, "InvalidInput") and "TTL" in body["message"]


def test_update_and_delete_service(sd):
    ns_id, _ = private_namespace(sd)
    svc = sd.create_service(Name="web", NamespaceId=ns_id, DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 60}]})["Service"]
    op = done(sd, sd.update_service(Id=svc["Id"], Service={"Description": "d", "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": 5}]}})["OperationId"])
    assert op["Type"] == "UPDATE_SERVICE" and op["Targets"]["SERVICE"] == svc["Id"]
    got = sd.get_service(Id=svc["Id"])["Service"]
    assert got["Description"] == "d" and got["DnsConfig"]["DnsRecords"] == [{"Type": "A", "TTL": 5}]
    expect("InvalidInput", sd.update_service, Id=svc["Id"], Service={"DnsConfig": {"DnsRecords": [{"Type": "AAAA", "TTL": 5}]}})
    expect("InvalidInput", sd.update_service, Id=svc["Id"], Service={"HealthCheckConfig": {"Type": "TCP"}})
    expect("ServiceNotFound", sd.update_service, Id="srv-0000000000000000", Service={"Description": "d"})

    sd.register_instance(ServiceId=svc["Id"], InstanceId="i-1", Attributes={"AWS_INSTANCE_IPV4": "10.0.0.1"})
    expect("ResourceInUse", sd.delete_service, Id=svc["Id"])
    sd.deregister_instance(ServiceId=svc["Id"], InstanceId="i-1")
    sd.delete_service(Id=svc["Id"])
    expect("ServiceNotFound", sd.get_service, Id=svc["Id"])
    expect("ServiceNotFound", sd.delete_service, Id=svc["Id"])
    # The name is free again.
    sd.create_service(Name="web", NamespaceId=ns_id, DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 60}]})


def test_health_check_config_updates(sd):
    pub_id = done(sd, sd.create_public_dns_namespace(Name=unique("p") + ".example.com")["OperationId"])["Targets"]["NAMESPACE"]
    a = {"DnsRecords": [{"Type": "A", "TTL": 60}]}
    svc = sd.create_service(Name="web", NamespaceId=pub_id, DnsConfig=a)["Service"]["Id"]
    done(sd, sd.update_service(Id=svc, Service={"HealthCheckConfig": {"Type": "TCP", "FailureThreshold": 3}})["OperationId"])
    assert sd.get_service(Id=svc)["Service"]["HealthCheckConfig"] == {"Type": "TCP", "FailureThreshold": 3}
    # A health check left out of the change is deleted, as in Cloud Map; DNS records stay.
    done(sd, sd.update_service(Id=svc, Service={"Description": "d"})["OperationId"])
    got = sd.get_service(Id=svc)["Service"]
    assert "HealthCheckConfig" not in got and got["DnsConfig"]["DnsRecords"] == a["DnsRecords"]
    custom = sd.create_service(Name="c", NamespaceId=pub_id, DnsConfig=a, HealthCheckCustomConfig={})["Service"]["Id"]
    expect("InvalidInput", sd.update_service, Id=custom, Service={"HealthCheckConfig": {"Type": "TCP"}})


def test_service_attributes(sd):
    ns_id, _ = http_namespace(sd)
    svc = sd.create_service(Name="web", NamespaceId=ns_id)["Service"]
    got = sd.get_service_attributes(ServiceId=svc["Id"])["ServiceAttributes"]
    assert got == {"ServiceArn": svc["Arn"], "ResourceOwner": "000000000000", "Attributes": {}}
    sd.update_service_attributes(ServiceId=svc["Id"], Attributes={"a": "1", "b": "2"})
    sd.update_service_attributes(ServiceId=svc["Id"], Attributes={"b": "3"})
    assert sd.get_service_attributes(ServiceId=svc["Id"])["ServiceAttributes"]["Attributes"] == {"a": "1", "b": "3"}
    sd.delete_service_attributes(ServiceId=svc["Id"], Attributes=["a"])
    assert sd.get_service_attributes(ServiceId=svc["Id"])["ServiceAttributes"]["Attributes"] == {"b": "3"}
    expect("ServiceAttributesLimitExceededException", sd.update_service_attributes, ServiceId=svc["Id"], Attributes={f"k{i}": "v" for i in range(30)})
    expect("ServiceNotFound", sd.get_service_attributes, ServiceId="srv-0000000000000000")
    expect("ServiceNotFound", sd.update_service_attributes, ServiceId="srv-0000000000000000", Attributes={"a": "1"})


# Instances.


def test_register_get_list_deregister(sd):
    ns_id, _ = private_namespace(sd)
    svc = sd.create_service(
        Name="web", NamespaceId=ns_id, DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 60}, {"Type": "SRV", "TTL": 60}]}
    )["Service"]
    attrs = {"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "8080", "color": "blue"}
    op_id = sd.register_instance(ServiceId=svc["Id"], InstanceId="i-1", Attributes=attrs)["OperationId"]
    op = done(sd, op_id)
    assert op["Type"] == "REGISTER_INSTANCE" and op["Targets"] == {"INSTANCE": "i-1", "SERVICE": svc["Id"]}
    inst = sd.get_instance(ServiceId=svc["Id"], InstanceId="i-1")
    assert inst["Instance"]["Id"] == "i-1" and inst["Instance"]["Attributes"] == attrs
    assert inst["ResourceOwner"] == "000000000000"
    for i in range(2, 4):
        sd.register_instance(ServiceId=svc["Id"], InstanceId=f"i-{i}", Attributes={"AWS_INSTANCE_IPV4": f"10.0.0.{i}", "AWS_INSTANCE_PORT": "80"})
    assert sd.get_service(Id=svc["Id"])["Service"]["InstanceCount"] == 3
    first = sd.list_instances(ServiceId=svc["Id"], MaxResults=2)
    rest = sd.list_instances(ServiceId=svc["Id"], MaxResults=2, NextToken=first["NextToken"])
    assert [i["Id"] for i in first["Instances"] + rest["Instances"]] == ["i-1", "i-2", "i-3"]
    # Registering again updates the instance.
    sd.register_instance(ServiceId=svc["Id"], InstanceId="i-1", Attributes={"AWS_INSTANCE_IPV4": "10.0.0.9", "AWS_INSTANCE_PORT": "80"})
    assert sd.get_instance(ServiceId=svc["Id"], InstanceId="i-1")["Instance"]["Attributes"]["AWS_INSTANCE_IPV4"] == "10.0.0.9"
    op = done(sd, sd.deregister_instance(ServiceId=svc["Id"], InstanceId="i-1")["OperationId"])
    assert op["Type"] == "DEREGISTER_INSTANCE"
    expect("InstanceNotFound", sd.get_instance, ServiceId=svc["Id"], InstanceId="i-1")
    expect("InstanceNotFound", sd.deregister_instance, ServiceId=svc["Id"], InstanceId="i-1")
    expect("ServiceNotFound", sd.register_instance, ServiceId="srv-0000000000000000", InstanceId="i", Attributes={"a": "b"})
    expect("ServiceNotFound", sd.list_instances, ServiceId="srv-0000000000000000")
    expect("ServiceNotFound", sd.get_instance, ServiceId="srv-0000000000000000", InstanceId="i-2")


def test_instance_attributes_must_match_the_records(sd):
    ns_id, _ = private_namespace(sd)
    mk = lambda name, records, **kw: sd.create_service(Name=name, NamespaceId=ns_id, DnsConfig={"DnsRecords": [{"Type": t, "TTL": 60} for t in records], **kw})["Service"]["Id"]
    a, aaaa, srv = mk("a", ["A"]), mk("aaaa", ["AAAA"]), mk("srv", ["SRV"])
    cname = mk("cname", ["CNAME"], RoutingPolicy="WEIGHTED")
    weighted = mk("alias", ["A"], RoutingPolicy="WEIGHTED")
    reg = lambda s, attrs: sd.register_instance(ServiceId=s, InstanceId=unique("i"), Attributes=attrs)
    for s, attrs in [
        (a, {"color": "blue"}),
        (a, {"AWS_INSTANCE_IPV4": "300.1.1.1"}),
        (aaaa, {"AWS_INSTANCE_IPV4": "10.0.0.1"}),
        (srv, {"AWS_INSTANCE_IPV4": "10.0.0.1"}),
        (srv, {"AWS_INSTANCE_PORT": "80"}),
        (srv, {"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "99999"}),
        (cname, {"AWS_INSTANCE_IPV4": "10.0.0.1"}),
        (a, {"AWS_ALIAS_DNS_NAME": "lb.elb.amazonaws.com"}),
        (weighted, {"AWS_ALIAS_DNS_NAME": "lb.elb.amazonaws.com", "AWS_INSTANCE_IPV4": "10.0.0.1"}),
        (a, {"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INIT_HEALTH_STATUS": "HEALTHY"}),
    ]:
        msg = expect("InvalidInput", reg, s, attrs)
        assert msg
    reg(aaaa, {"AWS_INSTANCE_IPV6": "2001:db8::1"})
    reg(srv, {"AWS_INSTANCE_IPV6": "2001:db8::1", "AWS_INSTANCE_PORT": "443"})
    reg(cname, {"AWS_INSTANCE_CNAME": "www.example.com"})
    reg(weighted, {"AWS_ALIAS_DNS_NAME": "lb.elb.amazonaws.com"})
    h_id, _ = http_namespace(sd)
    h = sd.create_service(Name="h", NamespaceId=h_id)["Service"]["Id"]
    reg(h, {"endpoint": "https://10.0.0.1:8443", "zone": "a"})
    expect("InvalidInput", reg, h, {f"k{i}": "v" for i in range(31)})


def test_custom_health(sd):
    h_id, ns_name = http_namespace(sd)
    custom = sd.create_service(Name="custom", NamespaceId=h_id, HealthCheckCustomConfig={"FailureThreshold": 3})["Service"]["Id"]
    plain = sd.create_service(Name="plain", NamespaceId=h_id)["Service"]["Id"]
    sd.register_instance(ServiceId=custom, InstanceId="ok", Attributes={"a": "1"})
    sd.register_instance(ServiceId=custom, InstanceId="sick", Attributes={"AWS_INIT_HEALTH_STATUS": "UNHEALTHY"})
    sd.register_instance(ServiceId=plain, InstanceId="p", Attributes={"a": "1"})
    assert sd.get_instances_health_status(ServiceId=custom)["Status"] == {"ok": "HEALTHY", "sick": "UNHEALTHY"}
    assert sd.get_instances_health_status(ServiceId=plain)["Status"] == {"p": "UNKNOWN"}
    sd.update_instance_custom_health_status(ServiceId=custom, InstanceId="ok", Status="UNHEALTHY")
    sd.update_instance_custom_health_status(ServiceId=custom, InstanceId="sick", Status="HEALTHY")
    assert sd.get_instances_health_status(ServiceId=custom, Instances=["ok"])["Status"] == {"ok": "UNHEALTHY"}
    page = sd.get_instances_health_status(ServiceId=custom, MaxResults=1)
    assert len(page["Status"]) == 1 and page["NextToken"]
    expect("CustomHealthNotFound", sd.update_instance_custom_health_status, ServiceId=plain, InstanceId="p", Status="HEALTHY")
    expect("InstanceNotFound", sd.update_instance_custom_health_status, ServiceId=custom, InstanceId="nope", Status="HEALTHY")
    expect("ServiceNotFound", sd.update_instance_custom_health_status, ServiceId="srv-0000000000000000", InstanceId="ok", Status="HEALTHY")
    expect("InstanceNotFound", sd.get_instances_health_status, ServiceId=custom, Instances=["nope"])
    expect("InvalidInput", sd.update_instance_custom_health_status, ServiceId=custom, InstanceId="ok", Status="MAYBE")


def test_discover_instances(sd, shared):
    h_id, ns_name = http_namespace(sd)
    svc = sd.create_service(Name="web", NamespaceId=h_id, HealthCheckCustomConfig={})["Service"]["Id"]
    sd.register_instance(ServiceId=svc, InstanceId="blue-1", Attributes={"color": "blue", "v": "1"})
    sd.register_instance(ServiceId=svc, InstanceId="green-1", Attributes={"color": "green", "v": "1"})
    sd.register_instance(ServiceId=svc, InstanceId="green-2", Attributes={"color": "green", "v": "2", "AWS_INIT_HEALTH_STATUS": "UNHEALTHY"})

    def ids(**kw):
        out = sd.discover_instances(NamespaceName=ns_name, ServiceName="web", **kw)
        for i in out["Instances"]:
            assert i["NamespaceName"] == ns_name and i["ServiceName"] == "web" and i["HealthStatus"] in ("HEALTHY", "UNHEALTHY")
        return sorted(i["InstanceId"] for i in out["Instances"])

    assert ids() == ["blue-1", "green-1"]
    assert ids(HealthStatus="ALL") == ["blue-1", "green-1", "green-2"]
    assert ids(HealthStatus="UNHEALTHY") == ["green-2"]
    assert ids(QueryParameters={"color": "green"}) == ["green-1"]
    assert ids(QueryParameters={"color": "green"}, HealthStatus="ALL") == ["green-1", "green-2"]
    assert ids(QueryParameters={"v": "2"}, HealthStatus="HEALTHY_OR_ELSE_ALL") == ["green-2"]
    assert ids(QueryParameters={"v": "1"}, OptionalParameters={"color": "blue"}) == ["blue-1"]
    assert ids(QueryParameters={"v": "1"}, OptionalParameters={"color": "red"}) == ["blue-1", "green-1"]
    assert len(ids(HealthStatus="ALL", MaxResults=2)) == 2
    out = sd.discover_instances(NamespaceName=ns_name, ServiceName="web", QueryParameters={"color": "blue"})
    assert out["Instances"][0]["Attributes"] == {"color": "blue", "v": "1"}

    # A service without health checks answers every instance, whatever HealthStatus says.
    plain = sd.create_service(Name="plain", NamespaceId=h_id)["Service"]["Id"]
    sd.register_instance(ServiceId=plain, InstanceId="p", Attributes={"a": "1"})
    out = sd.discover_instances(NamespaceName=ns_name, ServiceName="plain", HealthStatus="UNHEALTHY")
    assert [(i["InstanceId"], i["HealthStatus"]) for i in out["Instances"]] == [("p", "UNKNOWN")]

    expect("NamespaceNotFound", sd.discover_instances, NamespaceName=unique("nope"), ServiceName="web")
    expect("ServiceNotFound", sd.discover_instances, NamespaceName=ns_name, ServiceName="nope")
    expect("NamespaceNotFound", sd.discover_instances_revision, NamespaceName=unique("nope"), ServiceName="web")
    expect("ServiceNotFound", sd.discover_instances_revision, NamespaceName=ns_name, ServiceName="nope")
    status, body = raw(shared, "DiscoverInstances", {"NamespaceName": ns_name, "ServiceName": "web", "MaxResults": 0})
    assert (status, body["__type"]) == (400, "InvalidInput") and "MaxResults" in body["message"]


def test_instances_revision_moves_with_registrations_only(sd):
    h_id, ns_name = http_namespace(sd)
    svc = sd.create_service(Name="web", NamespaceId=h_id, HealthCheckCustomConfig={})["Service"]["Id"]
    rev = lambda: sd.discover_instances_revision(NamespaceName=ns_name, ServiceName="web")["InstancesRevision"]
    r0 = rev()
    sd.register_instance(ServiceId=svc, InstanceId="a", Attributes={"x": "1"})
    r1 = rev()
    assert r1 > r0
    assert sd.discover_instances(NamespaceName=ns_name, ServiceName="web")["InstancesRevision"] == r1
    sd.update_instance_custom_health_status(ServiceId=svc, InstanceId="a", Status="UNHEALTHY")
    assert rev() == r1
    sd.register_instance(ServiceId=svc, InstanceId="b", Attributes={"x": "2"})
    r2 = rev()
    assert r2 > r1
    sd.deregister_instance(ServiceId=svc, InstanceId="a")
    assert rev() > r2


def test_concurrent_registrations_and_creates(shared, sd):
    import concurrent.futures

    h_id, ns_name = http_namespace(sd)
    svc = sd.create_service(Name="web", NamespaceId=h_id)["Service"]["Id"]
    clients = [client(shared) for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: clients[i % 8].register_instance(ServiceId=svc, InstanceId=f"i-{i}", Attributes={"n": str(i)}), range(40)))
    assert sd.get_service(Id=svc)["Service"]["InstanceCount"] == 40
    assert len(sd.discover_instances(NamespaceName=ns_name, ServiceName="web", MaxResults=1000)["Instances"]) == 40

    # One name, many creators: exactly one namespace.
    name = unique("race")

    def create(i):
        try:
            return clients[i].create_http_namespace(Name=name)["OperationId"]
        except ClientError as e:
            return e.response["Error"]["Code"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(8)))
    assert results.count("NamespaceAlreadyExists") == 7, results
    assert len(sd.list_namespaces(Filters=[{"Name": "NAME", "Values": [name]}])["Namespaces"]) == 1


def test_boto3_without_host_prefix_through_the_environment(shared, sd, monkeypatch):
    h_id, ns_name = http_namespace(sd)
    sd.create_service(Name="web", NamespaceId=h_id)
    monkeypatch.setenv("AWS_DISABLE_HOST_PREFIX_INJECTION", "true")
    plain = boto3.client(
        "servicediscovery",
        endpoint_url=shared.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )
    assert plain.discover_instances(NamespaceName=ns_name, ServiceName="web")["Instances"] == []


# Operations and tags.


def test_list_operations_filters(sd):
    ns_id, _ = http_namespace(sd)
    svc = sd.create_service(Name="web", NamespaceId=ns_id)["Service"]["Id"]
    reg = sd.register_instance(ServiceId=svc, InstanceId="i", Attributes={"a": "b"})["OperationId"]
    upd = sd.update_service(Id=svc, Service={"Description": "x"})["OperationId"]
    ids = lambda *filters: {o["Id"] for o in sd.list_operations(Filters=list(filters))["Operations"]}
    by_service = {"Name": "SERVICE_ID", "Values": [svc]}
    assert ids(by_service) == {reg, upd}
    assert ids(by_service, {"Name": "TYPE", "Values": ["UPDATE_SERVICE"]}) == {upd}
    assert ids(by_service, {"Name": "TYPE", "Condition": "IN", "Values": ["UPDATE_SERVICE", "REGISTER_INSTANCE"]}) == {reg, upd}
    done(sd, reg)
    done(sd, upd)
    assert ids(by_service, {"Name": "STATUS", "Values": ["SUCCESS"]}) == {reg, upd}
    assert ids(by_service, {"Name": "STATUS", "Values": ["PENDING"]}) == set()
    assert len(ids({"Name": "NAMESPACE_ID", "Values": [ns_id]})) == 1
    now = time.time()
    assert ids(by_service, {"Name": "UPDATE_DATE", "Condition": "BETWEEN", "Values": [str(now - 600), str(now + 60)]}) == {reg, upd}
    assert ids(by_service, {"Name": "UPDATE_DATE", "Condition": "BETWEEN", "Values": ["0", "1"]}) == set()
    page = sd.list_operations(Filters=[by_service], MaxResults=1)
    assert len(page["Operations"]) == 1 and page["NextToken"]
    expect("InvalidInput", sd.list_operations, Filters=[{"Name": "UPDATE_DATE", "Values": ["1"]}])
    expect("InvalidInput", sd.list_operations, Filters=[{"Name": "SERVICE_ID", "Condition": "IN", "Values": [svc]}])
    expect("OperationNotFound", sd.get_operation, OperationId="nope")


def test_tags_on_namespaces_and_services(sd):
    ns_id, _ = http_namespace(sd, Tags=[{"Key": "env", "Value": "test"}])
    ns_arn = sd.get_namespace(Id=ns_id)["Namespace"]["Arn"]
    assert sd.list_tags_for_resource(ResourceARN=ns_arn)["Tags"] == [{"Key": "env", "Value": "test"}]
    sd.tag_resource(ResourceARN=ns_arn, Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "a"}])
    assert sorted((t["Key"], t["Value"]) for t in sd.list_tags_for_resource(ResourceARN=ns_arn)["Tags"]) == [("env", "prod"), ("team", "a")]
    sd.untag_resource(ResourceARN=ns_arn, TagKeys=["env"])
    assert sd.list_tags_for_resource(ResourceARN=ns_arn)["Tags"] == [{"Key": "team", "Value": "a"}]
    svc = sd.create_service(Name="web", NamespaceId=ns_id, Tags=[{"Key": "k", "Value": "v"}])["Service"]
    assert sd.list_tags_for_resource(ResourceARN=svc["Arn"])["Tags"] == [{"Key": "k", "Value": "v"}]
    sd.untag_resource(ResourceARN=svc["Arn"], TagKeys=["k"])
    assert sd.list_tags_for_resource(ResourceARN=svc["Arn"])["Tags"] == []
    missing = "arn:aws:servicediscovery:us-east-1:000000000000:service/srv-0000000000000000"
    expect("ResourceNotFoundException", sd.list_tags_for_resource, ResourceARN=missing)
    expect("ResourceNotFoundException", sd.tag_resource, ResourceARN=missing, Tags=[{"Key": "a", "Value": "b"}])
    expect("ResourceNotFoundException", sd.untag_resource, ResourceARN="arn:aws:ecs:us-east-1:000000000000:cluster/x", TagKeys=["a"])
    expect("TooManyTagsException", sd.tag_resource, ResourceARN=svc["Arn"], Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])


def test_accounts_and_regions_are_apart(shared, sd):
    ns_id, name = http_namespace(sd)
    other = boto3.client(
        "servicediscovery",
        endpoint_url=shared.endpoint,
        region_name="eu-west-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(retries={"max_attempts": 1}, inject_host_prefix=False),
    )
    expect("NamespaceNotFound", other.get_namespace, Id=ns_id)
    assert all(n["Id"] != ns_id for n in other.list_namespaces()["Namespaces"])
    http_namespace(other, name)  # the same name in another region


# The AWS CLI.


def test_aws_cli(shared, monkeypatch):
    name = unique("cli")
    op = shared.aws("servicediscovery", "create-http-namespace", "--name", name)["OperationId"]
    ns_id = wait_until(
        lambda: (lambda o: o["Targets"]["NAMESPACE"] if o["Status"] == "SUCCESS" else None)(
            shared.aws("servicediscovery", "get-operation", "--operation-id", op)["Operation"]
        ),
        what="the namespace",
    )
    svc = shared.aws("servicediscovery", "create-service", "--name", "web", "--namespace-id", ns_id, "--health-check-custom-config", "FailureThreshold=1")["Service"]
    shared.aws("servicediscovery", "register-instance", "--service-id", svc["Id"], "--instance-id", "i-1", "--attributes", "color=blue,AWS_INSTANCE_PORT=80")
    listed = shared.aws("servicediscovery", "list-instances", "--service-id", svc["Id"])["Instances"]
    assert [i["Id"] for i in listed] == ["i-1"]
    p = shared.aws("servicediscovery", "get-namespace", "--id", "ns-0000000000000000", check=False)
    assert p.returncode != 0 and "NamespaceNotFound" in p.stderr
    p = shared.aws("servicediscovery", "delete-namespace", "--id", ns_id, check=False)
    assert p.returncode != 0 and "ResourceInUse" in p.stderr
    # DiscoverInstances goes to data-<host>; through estiba as the CLI's HTTP proxy it arrives.
    monkeypatch.setenv("HTTP_PROXY", shared.endpoint)
    out = shared.aws("servicediscovery", "discover-instances", "--namespace-name", name, "--service-name", "web", "--query-parameters", "color=blue")
    assert [(i["InstanceId"], i["HealthStatus"]) for i in out["Instances"]] == [("i-1", "HEALTHY")]


# ECS services' serviceRegistries, checked as ECS does.


def test_ecs_service_registries_are_checked(shared, sd):
    from conftest import register_fargate
    ecs = shared.client()
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    ns, _ = private_namespace(sd)
    a = sd.create_service(Name=unique("a"), NamespaceId=ns,
                          DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 10}]})["Service"]
    srv = sd.create_service(Name=unique("s"), NamespaceId=ns,
                            DnsConfig={"DnsRecords": [{"Type": "SRV", "TTL": 10}]})["Service"]
    fam = unique("f")
    register_fargate(ecs, fam, [{"name": "web", "image": "busybox", "portMappings": [{"containerPort": 8080}]}])
    net = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}

    def create(regs):
        return ecs.create_service(cluster=cluster, serviceName=unique("s"), taskDefinition=fam, desiredCount=0,
                                  launchType="FARGATE", networkConfiguration=net, serviceRegistries=regs)

    def refused(regs, fragment):
        with pytest.raises(ClientError) as e:
            create(regs)
        assert error_code(e) == "InvalidParameterException" and fragment in error_message(e), error_message(e)

    ok = create([{"registryArn": a["Arn"]}])["service"]
    assert ok["serviceRegistries"] == [{"registryArn": a["Arn"]}]
    create([{"registryArn": srv["Arn"], "containerName": "web", "containerPort": 8080}])
    create([{"registryArn": srv["Arn"], "port": 8080}])
    refused([{"registryArn": a["Arn"], "port": 80}], "A port was provided but is not required")
    refused([{"registryArn": srv["Arn"]}], "Specify a value for either 'port'")
    refused([{"registryArn": srv["Arn"], "port": 1, "containerName": "web", "containerPort": 8080}], "but not both")
    refused([{"registryArn": srv["Arn"], "containerName": "db", "containerPort": 8080}], "'db'")
    refused([{"registryArn": srv["Arn"], "containerName": "web", "containerPort": 9}], "container port 9")
    refused([{"registryArn": a["Arn"].replace(a["Id"], "srv-0000000000000000")}], "does not exist")
    refused([{"registryArn": a["Arn"].replace(":service/", ":namespace/")}], "ARN is invalid")
    refused([{"registryArn": a["Arn"]}, {"registryArn": srv["Arn"], "port": 1}], "one service registry")
    # UpdateService checks them too, and a refused update changes nothing.
    with pytest.raises(ClientError) as e:
        ecs.update_service(cluster=cluster, service=ok["serviceName"], serviceRegistries=[{"registryArn": srv["Arn"]}])
    assert error_code(e) == "InvalidParameterException"
    got = ecs.describe_services(cluster=cluster, services=[ok["serviceName"]])["services"][0]
    assert got["serviceRegistries"] == [{"registryArn": a["Arn"]}]
