//! The codecs on the models' own shapes: Query and EC2 requests into typed inputs, answers
//! into XML and CBOR and back, and what each protocol refuses.

use serde_json::{json, Value};

use super::query::{self, Flavour, Params};
use super::{cbor, decode_value, DecodeError, PathStyle};
use crate::{cloudwatch, ec2, elbv2};

fn params(pairs: &[(&str, &str)]) -> Params {
    Params(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

fn elbv2_input(op: elbv2::Operation, pairs: &[(&str, &str)]) -> Result<Value, DecodeError> {
    query::to_value(&elbv2::MODEL, op.schema().input, &params(pairs), Flavour::Query)
}

#[test]
fn query_lists_scalars_and_empty_lists() {
    let v = elbv2_input(
        elbv2::Operation::DescribeTargetGroups,
        &[
            ("Action", "DescribeTargetGroups"),
            ("Version", "2015-12-01"),
            ("Names.member.2", "b"),
            ("Names.member.1", "a"),
            ("Names.member.10", "j"),
            ("PageSize", "20"),
        ],
    )
    .unwrap();
    assert_eq!(v, json!({"Names": ["a", "b", "j"], "PageSize": 20}));
    let typed: elbv2::DescribeTargetGroupsInput = decode_value(v, PathStyle::LowerFirst).unwrap();
    assert_eq!(typed.names.as_deref(), Some(&["a".to_owned(), "b".into(), "j".into()][..]));
    assert_eq!(typed.page_size, Some(20));
    assert_eq!(typed.target_group_arns, None);
    // An empty list is sent as `Name=`: present and empty, unlike an absent member.
    let v = elbv2_input(elbv2::Operation::DescribeTargetGroups, &[("Names", "")]).unwrap();
    assert_eq!(v, json!({"Names": []}));
}

#[test]
fn query_nested_structures_timestamps_and_maps() {
    let p = params(&[
        ("Namespace", "app"),
        ("MetricData.member.1.MetricName", "Latency"),
        ("MetricData.member.1.Timestamp", "2024-05-01T12:00:00.500Z"),
        ("MetricData.member.1.Value", "12.5"),
        ("MetricData.member.1.Dimensions.member.1.Name", "Service"),
        ("MetricData.member.1.Dimensions.member.1.Value", "web"),
        ("MetricData.member.1.StatisticValues.SampleCount", "2"),
        ("MetricData.member.1.StatisticValues.Sum", "3"),
        ("MetricData.member.1.StatisticValues.Minimum", "1"),
        ("MetricData.member.1.StatisticValues.Maximum", "2"),
        ("EntityMetricData.member.1.Entity.KeyAttributes.entry.1.key", "Type"),
        ("EntityMetricData.member.1.Entity.KeyAttributes.entry.1.value", "Service"),
        ("EntityMetricData.member.1.Entity.KeyAttributes.entry.2.key", "Name"),
        ("EntityMetricData.member.1.Entity.KeyAttributes.entry.2.value", "web"),
        ("StrictEntityValidation", "true"),
    ]);
    let op = cloudwatch::Operation::PutMetricData.schema();
    let v = query::to_value(&cloudwatch::MODEL, op.input, &p, Flavour::Query).unwrap();
    assert_eq!(v["MetricData"][0]["Timestamp"], json!(1714564800.5));
    assert_eq!(v["MetricData"][0]["StatisticValues"]["Sum"], json!(3.0));
    assert_eq!(v["EntityMetricData"][0]["Entity"]["KeyAttributes"], json!({"Type": "Service", "Name": "web"}));
    let typed: cloudwatch::PutMetricDataInput = decode_value(v.clone(), PathStyle::LowerFirst).unwrap();
    let d = &typed.metric_data.as_ref().unwrap()[0];
    assert_eq!((d.metric_name.as_str(), d.value, d.timestamp), ("Latency", Some(12.5), Some(1714564800.5)));
    assert_eq!(typed.strict_entity_validation, Some(true));
    // What a client sends for that input decodes back to it.
    let again = query::to_value(
        &cloudwatch::MODEL,
        op.input,
        &query::to_params(&cloudwatch::MODEL, op, &v, Flavour::Query),
        Flavour::Query,
    )
    .unwrap();
    assert_eq!(again, v);
}

#[test]
fn query_refuses_malformed_values_with_the_parameter_named() {
    let e = elbv2_input(elbv2::Operation::DescribeTargetGroups, &[("PageSize", "many")]).unwrap_err();
    assert_eq!(e, DecodeError::Serialization("Value 'many' for parameter PageSize is not a valid integer".into()));
    let op = cloudwatch::Operation::PutMetricData.schema();
    let e = query::to_value(
        &cloudwatch::MODEL,
        op.input,
        &params(&[
            ("Namespace", "a"),
            ("MetricData.member.1.MetricName", "m"),
            ("MetricData.member.1.Timestamp", "soon"),
        ]),
        Flavour::Query,
    )
    .unwrap_err();
    assert!(matches!(e, DecodeError::Serialization(ref m) if m.contains("MetricData.member.1.Timestamp")), "{e:?}");
    // Model checks name members with a lower-case first letter, as Query services do.
    let v = elbv2_input(elbv2::Operation::DescribeTargetHealth, &[]).unwrap();
    let e = decode_value::<elbv2::DescribeTargetHealthInput>(v, PathStyle::LowerFirst).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Missing(
            "1 validation error detected: Value null at 'targetGroupArn' failed to satisfy constraint: Member must not be null".into()
        )
    );
    let v = elbv2_input(elbv2::Operation::DescribeTargetGroups, &[("PageSize", "4000")]).unwrap();
    let e = decode_value::<elbv2::DescribeTargetGroupsInput>(v, PathStyle::LowerFirst).unwrap_err();
    assert!(
        matches!(e, DecodeError::Validation(ref m) if m.contains("at 'pageSize'") && m.contains("less than or equal to 400")),
        "{e:?}"
    );
}

#[test]
fn query_answers_wrap_results_and_lists() {
    let op = elbv2::Operation::DescribeLoadBalancers.schema();
    let out = json!({"LoadBalancers": [{
        "LoadBalancerName": "web",
        "CreatedTime": 1714564800.5,
        "AvailabilityZones": [{"ZoneName": "us-east-1a", "SubnetId": "subnet-1"}],
        "SecurityGroups": [],
        "State": {"Code": "active"},
    }]});
    let xml = query::response(&elbv2::MODEL, op, &out, "rid-1", Flavour::Query);
    let text = String::from_utf8(xml.clone()).unwrap();
    assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"), "{text}");
    assert!(text.contains(
        "<DescribeLoadBalancersResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><DescribeLoadBalancersResult><LoadBalancers><member>"
    ), "{text}");
    assert!(text.contains("<CreatedTime>2024-05-01T12:00:00.500Z</CreatedTime>"), "{text}");
    assert!(text.contains("<SecurityGroups/>"), "{text}");
    assert!(
        text.ends_with(
            "<ResponseMetadata><RequestId>rid-1</RequestId></ResponseMetadata></DescribeLoadBalancersResponse>"
        ),
        "{text}"
    );
    assert_eq!(query::parse_response(&elbv2::MODEL, op, &xml, Flavour::Query).unwrap(), out);
    // Text is escaped; characters XML cannot hold are replaced, carriage returns kept.
    let x = query::error(Flavour::Query, "", "ValidationError", "bad \u{1}value\r\n", true, "r");
    let text = String::from_utf8(x).unwrap();
    assert!(text.contains("bad \u{FFFD}value&#xD;\n"), "{text}");
    let out = json!({"LoadBalancers": [{"LoadBalancerName": "a<b>&\"c\"\r"}]});
    let xml = query::response(&elbv2::MODEL, op, &out, "r", Flavour::Query);
    assert!(String::from_utf8_lossy(&xml).contains("a&lt;b&gt;&amp;"));
    assert_eq!(query::parse_response(&elbv2::MODEL, op, &xml, Flavour::Query).unwrap(), out);
}

#[test]
fn query_errors() {
    let x = query::error(Flavour::Query, elbv2::MODEL.xml_namespace, "LoadBalancerNotFound", "no <lb>", true, "rid");
    assert_eq!(
        String::from_utf8(x).unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><Error><Type>Sender</Type><Code>LoadBalancerNotFound</Code><Message>no &lt;lb&gt;</Message></Error><RequestId>rid</RequestId></ErrorResponse>"
    );
    let x = query::error(Flavour::Ec2, ec2::MODEL.xml_namespace, "InvalidVpcID.NotFound", "gone", true, "rid");
    assert_eq!(
        String::from_utf8(x).unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>InvalidVpcID.NotFound</Code><Message>gone</Message></Error></Errors><RequestID>rid</RequestID></Response>"
    );
}

#[test]
fn ec2_lists_filters_items_and_unknown_parameters() {
    let op = ec2::Operation::DescribeSubnets.schema();
    let p = params(&[
        ("Action", "DescribeSubnets"),
        ("Version", "2016-11-15"),
        ("SubnetId.1", "subnet-a"),
        ("Filter.1.Name", "availability-zone"),
        ("Filter.1.Value.1", "us-east-1a"),
        ("Filter.1.Value.2", "us-east-1b"),
    ]);
    let v = query::to_value(&ec2::MODEL, op.input, &p, Flavour::Ec2).unwrap();
    assert_eq!(
        v,
        json!({"SubnetIds": ["subnet-a"], "Filters": [{"Name": "availability-zone", "Values": ["us-east-1a", "us-east-1b"]}]})
    );
    let typed: ec2::DescribeSubnetsRequest = decode_value(v.clone(), PathStyle::LowerFirst).unwrap();
    assert_eq!(typed.filters.unwrap()[0].values.as_ref().unwrap().len(), 2);
    assert_eq!(
        query::to_value(&ec2::MODEL, op.input, &query::to_params(&ec2::MODEL, op, &v, Flavour::Ec2), Flavour::Ec2)
            .unwrap(),
        v
    );
    let e = query::to_value(&ec2::MODEL, op.input, &params(&[("Bogus.1", "x")]), Flavour::Ec2).unwrap_err();
    assert_eq!(e, DecodeError::Unknown("The parameter Bogus is not recognized".into()));

    let out = json!({"Subnets": [{"SubnetId": "subnet-a", "MapPublicIpOnLaunch": true, "AvailableIpAddressCount": 4091, "Ipv6CidrBlockAssociationSet": []}]});
    let xml = query::response(&ec2::MODEL, op, &out, "rid", Flavour::Ec2);
    let text = String::from_utf8(xml.clone()).unwrap();
    assert!(text.contains(
        "<DescribeSubnetsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>rid</requestId><subnetSet><item><availableIpAddressCount>4091</availableIpAddressCount>"
    ), "{text}");
    assert!(
        text.contains("<mapPublicIpOnLaunch>true</mapPublicIpOnLaunch>")
            && text.contains("<ipv6CidrBlockAssociationSet/>"),
        "{text}"
    );
    assert_eq!(query::parse_response(&ec2::MODEL, op, &xml, Flavour::Ec2).unwrap(), out);
}

#[test]
fn cbor_round_trips_timestamps_doubles_blobs_and_nesting() {
    let op = cloudwatch::Operation::GetMetricData.schema();
    let input = json!({
        "StartTime": 1714564800.0,
        "EndTime": 1714568400.25,
        "MetricDataQueries": [{
            "Id": "m1",
            "MetricStat": {"Metric": {"Namespace": "AWS/ECS", "MetricName": "CPUUtilization", "Dimensions": [{"Name": "ClusterName", "Value": "c"}]}, "Period": 60, "Stat": "Average"},
            "ReturnData": false,
        }],
        "MaxDatapoints": 100,
    });
    let body = cbor::from_value(&cloudwatch::MODEL, op.input, &input);
    // Timestamps are tag 1 (0xc1), text keys are the member names.
    assert!(body.windows(2).any(|w| w == [0xc1, 0x1a]) || body.windows(2).any(|w| w == [0xc1, 0xfb]), "{body:02x?}");
    let back = cbor::to_value(&cloudwatch::MODEL, op.input, &body).unwrap();
    assert_eq!(back, input);
    let typed: cloudwatch::GetMetricDataInput = decode_value(back, PathStyle::Members).unwrap();
    assert_eq!(typed.metric_data_queries[0].metric_stat.as_ref().unwrap().period, 60);

    let out = json!({"MetricDataResults": [{"Id": "m1", "Timestamps": [1714564800.0, 1714564860.5], "Values": [0.5, 2.0], "StatusCode": "Complete"}], "Messages": []});
    let body = cbor::from_value(&cloudwatch::MODEL, op.output, &out);
    assert_eq!(cbor::to_value(&cloudwatch::MODEL, op.output, &body).unwrap(), out);

    let op = cloudwatch::Operation::GetMetricWidgetImage.schema();
    let out = json!({"MetricWidgetImage": "iVBORw0KGgo="});
    let body = cbor::from_value(&cloudwatch::MODEL, op.output, &out);
    assert!(
        body.windows(8).any(|w| w == [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]),
        "a byte string: {body:02x?}"
    );
    assert_eq!(cbor::to_value(&cloudwatch::MODEL, op.output, &body).unwrap(), out);
}

#[test]
fn cbor_maps_and_query_maps_carry_the_same_input() {
    let op = cloudwatch::Operation::PutMetricData.schema();
    let input = json!({
        "Namespace": "app",
        "EntityMetricData": [{
            "Entity": {"KeyAttributes": {"Type": "Service", "Name": "web"}, "Attributes": {}},
            "MetricData": [{"MetricName": "Latency", "Values": [1.5, 2.0], "Counts": [3.0, 1.0], "StorageResolution": 1}],
        }],
    });
    let body = cbor::from_value(&cloudwatch::MODEL, op.input, &input);
    assert_eq!(cbor::to_value(&cloudwatch::MODEL, op.input, &body).unwrap(), input);
    let form = query::to_params(&cloudwatch::MODEL, op, &input, Flavour::Query);
    assert!(
        form.0.iter().any(|(k, v)| k == "EntityMetricData.member.1.Entity.KeyAttributes.entry.2.key" && v == "Type"),
        "{form:?}"
    );
    // Like botocore, an empty map sends nothing (an empty list sends `Name=`).
    assert!(!form.0.iter().any(|(k, _)| k.contains("Entity.Attributes")), "{form:?}");
    let from_query = query::to_value(&cloudwatch::MODEL, op.input, &form, Flavour::Query).unwrap();
    let mut expected = input.clone();
    // Query has no way to send an empty map: it arrives absent.
    expected["EntityMetricData"][0]["Entity"].as_object_mut().unwrap().remove("Attributes");
    assert_eq!(from_query, expected);
    let typed: cloudwatch::PutMetricDataInput = decode_value(from_query, PathStyle::LowerFirst).unwrap();
    let e = &typed.entity_metric_data.unwrap()[0];
    assert_eq!(e.entity.as_ref().unwrap().key_attributes.as_ref().unwrap()["Name"], "web");
}

#[test]
fn cbor_refuses_malformed_bodies_and_wrong_types() {
    let op = cloudwatch::Operation::ListMetrics.schema();
    assert_eq!(cbor::to_value(&cloudwatch::MODEL, op.input, b"").unwrap(), json!({}));
    let e = cbor::to_value(&cloudwatch::MODEL, op.input, &[0xbf, 0x61]).unwrap_err();
    assert!(
        matches!(e, DecodeError::Serialization(ref m) if m.starts_with("The request body is not valid CBOR")),
        "{e:?}"
    );
    let mut body = Vec::new();
    ciborium::ser::into_writer(&ciborium::Value::Map(vec![("Namespace".into(), 5.into())]), &mut body).unwrap();
    let e = cbor::to_value(&cloudwatch::MODEL, op.input, &body).unwrap_err();
    assert_eq!(e, DecodeError::Serialization("Expected a text string at 'Namespace'".into()));
    // Absent and empty lists stay apart; unknown members are ignored, nulls are absent.
    let v = json!({"Dimensions": [], "RecentlyActive": "PT3H"});
    let mut with_extra = cbor::from_value(&cloudwatch::MODEL, op.input, &v);
    assert_eq!(cbor::to_value(&cloudwatch::MODEL, op.input, &with_extra).unwrap(), v);
    with_extra.clear();
    ciborium::ser::into_writer(
        &ciborium::Value::Map(vec![("Nope".into(), 1.into()), ("Namespace".into(), ciborium::Value::Null)]),
        &mut with_extra,
    )
    .unwrap();
    assert_eq!(cbor::to_value(&cloudwatch::MODEL, op.input, &with_extra).unwrap(), json!({}));
    let err = cbor::error_body("InvalidParameterValueException", "bad");
    let v: ciborium::Value = ciborium::de::from_reader(&err[..]).unwrap();
    assert_eq!(v.as_map().unwrap().len(), 2);
}
