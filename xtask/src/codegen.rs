//! Generates Rust wire types from botocore service models.
//!
//! Input: `crates/estiba-api/models/<service>/service-2.json.gz` (botocore's model, unchanged).
//! Output: `crates/estiba-api/src/generated/<service>.rs`, one module per service, holding:
//! - one struct per `structure` shape reachable from an operation, with serde attributes that
//!   give AWS's JSON member names; shapes reachable from inputs derive `Deserialize` and
//!   `Validate`, shapes reachable from outputs derive `Serialize` and `Deserialize`;
//! - one enum per string shape with an `enum` trait;
//! - the `Operation` enum (parsed from the `X-Amz-Target` suffix) and the `ErrorCode` enum of
//!   the service's exceptions;
//! - range, length and pattern checks from the model, reported in AWS's validation format.
//!
//! - `MODEL`: the service's protocols and names, and a table of every shape reachable from an
//!   operation (`estiba_api::schema`), which the Query, EC2 and RPC v2 CBOR codecs walk to
//!   translate their wire forms to and from the JSON the types read and write.
//!
//! The generator is general over the protocols (AWS JSON, Query, EC2, RPC v2 CBOR): nothing in
//! it knows about one service. EC2's model has hundreds of operations; only those estiba
//! answers (`EC2_OPERATIONS`) are generated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The services whose models are generated. `module` is the Rust module name.
pub const SERVICES: &[Service] = &[
    Service { module: "ecs", model: "ecs", only: None, primitive_defaults: true },
    Service { module: "ecr", model: "ecr", only: None, primitive_defaults: true },
    Service { module: "ec2", model: "ec2", only: Some(EC2_OPERATIONS), primitive_defaults: false },
    Service { module: "elbv2", model: "elbv2", only: None, primitive_defaults: false },
    Service { module: "servicediscovery", model: "servicediscovery", only: None, primitive_defaults: false },
    Service { module: "logs", model: "logs", only: None, primitive_defaults: false },
    Service { module: "cloudwatch", model: "cloudwatch", only: None, primitive_defaults: false },
    Service {
        module: "application_autoscaling",
        model: "application-autoscaling",
        only: None,
        primitive_defaults: false,
    },
    Service { module: "ssm", model: "ssm", only: Some(SSM_OPERATIONS), primitive_defaults: false },
    Service { module: "secretsmanager", model: "secretsmanager", only: None, primitive_defaults: false },
];

/// The EC2 operations estiba answers: what ECS users touch to find where tasks go.
const EC2_OPERATIONS: &[&str] = &["DescribeSecurityGroups", "DescribeSubnets", "DescribeVpcs"];

/// The SSM operations estiba answers: Parameter Store, and the session calls of ECS Exec.
const SSM_OPERATIONS: &[&str] = &[
    "PutParameter",
    "GetParameter",
    "GetParameters",
    "GetParametersByPath",
    "DeleteParameter",
    "DeleteParameters",
    "DescribeParameters",
    "LabelParameterVersion",
    "UnlabelParameterVersion",
    "GetParameterHistory",
    "AddTagsToResource",
    "RemoveTagsFromResource",
    "ListTagsForResource",
    // ECS Exec: the Session Manager plugin sends these to the ECS endpoint.
    "TerminateSession",
    "ResumeSession",
];

pub struct Service {
    pub module: &'static str,
    pub model: &'static str,
    /// Generate only these operations (and the shapes they reach).
    pub only: Option<&'static [&'static str]>,
    /// Optional members of unboxed primitive shapes are plain values that default to zero or
    /// false (the ECS and ECR models mark nullable ones `box`, and their handlers rely on it);
    /// in the other services every optional member is an `Option`, as Smithy's nullability
    /// rules make them (CloudWatch's `Value` of a datum may be absent, not zero).
    pub primitive_defaults: bool,
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn output_path(root: &Path, svc: &Service) -> PathBuf {
    root.join("crates/estiba-api/src/generated").join(format!("{}.rs", svc.module))
}

/// Generates every service and returns (path, contents) pairs, formatted with rustfmt.
pub fn generate_all(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for svc in SERVICES {
        let model_path = root.join("crates/estiba-api/models").join(svc.model).join("service-2.json.gz");
        let model = load_model(&model_path)?;
        let code = Generator::new(&model, svc)?.generate()?;
        out.push((output_path(root, svc), rustfmt(&code)?));
    }
    Ok(out)
}

pub fn run(check: bool) -> Result<()> {
    let root = workspace_root();
    let mut stale = Vec::new();
    for (path, code) in generate_all(&root)? {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != code {
            if check {
                stale.push(path.display().to_string());
            } else {
                std::fs::create_dir_all(path.parent().unwrap())?;
                std::fs::write(&path, code)?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        bail!("generated code is stale, run `cargo xtask codegen`: {}", stale.join(", "));
    }
    Ok(())
}

fn load_model(path: &Path) -> Result<Value> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text)?;
    Ok(serde_json::from_str(&text)?)
}

fn rustfmt(code: &str) -> Result<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running rustfmt (install it with `rustup component add rustfmt`)")?;
    let mut stdin = child.stdin.take().unwrap();
    let input = code.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output()?;
    writer.join().unwrap()?;
    if !output.status.success() {
        bail!("rustfmt failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Where a shape is used, which decides the traits it derives.
#[derive(Default, Clone, Copy)]
struct Usage {
    input: bool,
    output: bool,
}

struct Generator<'a> {
    svc: &'a Service,
    model: &'a Value,
    shapes: &'a serde_json::Map<String, Value>,
    usage: BTreeMap<String, Usage>,
    /// Rust type names for structure and enum shapes.
    names: HashMap<String, String>,
    /// Structure and list/map shapes whose values need checks.
    needs_check: BTreeSet<String>,
    /// (structure, member) pairs that must be boxed to break recursion.
    boxed: BTreeSet<(String, String)>,
    patterns: BTreeMap<String, String>,
}

const RESERVED_TYPE_NAMES: &[&str] = &[
    "Option",
    "Result",
    "Vec",
    "Box",
    "String",
    "Default",
    "Some",
    "None",
    "Ok",
    "Err",
    "Self",
    "Send",
    "Sync",
    "Copy",
    "Clone",
    "Value",
    "Validate",
    "Validator",
    "Blob",
    "Timestamp",
    "BTreeMap",
    "Operation",
    "ErrorCode",
    "Serialize",
    "Deserialize",
];

const RUST_KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for", "if", "impl", "in",
    "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "static", "struct", "super", "trait",
    "true", "type", "unsafe", "use", "where", "while", "async", "await", "dyn", "abstract", "become", "box", "do",
    "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

impl<'a> Generator<'a> {
    fn new(model: &'a Value, svc: &'a Service) -> Result<Self> {
        let shapes = model["shapes"].as_object().context("model has no shapes")?;
        let mut g = Generator {
            svc,
            model,
            shapes,
            usage: BTreeMap::new(),
            names: HashMap::new(),
            needs_check: BTreeSet::new(),
            boxed: BTreeSet::new(),
            patterns: BTreeMap::new(),
        };
        g.compute_usage()?;
        g.compute_names();
        g.compute_checks();
        g.compute_boxing();
        Ok(g)
    }

    fn shape(&self, name: &str) -> &'a Value {
        &self.shapes[name]
    }

    fn kind(&self, name: &str) -> &'a str {
        self.shapes[name]["type"].as_str().unwrap_or("")
    }

    fn is_enum(&self, name: &str) -> bool {
        self.kind(name) == "string" && self.shape(name).get("enum").is_some()
    }

    fn operations(&self) -> Vec<(&'a String, &'a Value)> {
        let mut ops: Vec<_> = self.model["operations"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| self.svc.only.is_none_or(|only| only.contains(&name.as_str())))
            .collect();
        ops.sort_by(|a, b| a.0.cmp(b.0));
        ops
    }

    fn compute_usage(&mut self) -> Result<()> {
        let mut roots_in = Vec::new();
        let mut roots_out = Vec::new();
        for (_, op) in self.operations() {
            if let Some(s) = op["input"]["shape"].as_str() {
                roots_in.push(s.to_owned());
            }
            if let Some(s) = op["output"]["shape"].as_str() {
                roots_out.push(s.to_owned());
            }
        }
        for (roots, input) in [(roots_in, true), (roots_out, false)] {
            let mut stack = roots;
            let mut seen = BTreeSet::new();
            while let Some(name) = stack.pop() {
                if !seen.insert(name.clone()) {
                    continue;
                }
                if !self.shapes.contains_key(&name) {
                    bail!("shape {name} is referenced but not defined");
                }
                let u = self.usage.entry(name.clone()).or_default();
                if input {
                    u.input = true;
                } else {
                    u.output = true;
                }
                stack.extend(self.children(&name));
            }
        }
        Ok(())
    }

    fn children(&self, name: &str) -> Vec<String> {
        let s = self.shape(name);
        match self.kind(name) {
            "structure" => s["members"]
                .as_object()
                .map(|m| m.values().map(|v| v["shape"].as_str().unwrap().to_owned()).collect())
                .unwrap_or_default(),
            "list" => vec![s["member"]["shape"].as_str().unwrap().to_owned()],
            "map" => {
                vec![s["key"]["shape"].as_str().unwrap().to_owned(), s["value"]["shape"].as_str().unwrap().to_owned()]
            }
            _ => vec![],
        }
    }

    fn compute_names(&mut self) {
        for name in self.usage.keys() {
            if self.kind(name) == "structure" || self.is_enum(name) {
                let mut rust = pascal(name);
                if RESERVED_TYPE_NAMES.contains(&rust.as_str()) {
                    rust.push_str("Shape");
                }
                self.names.insert(name.clone(), rust);
            }
        }
    }

    fn has_own_constraint(&self, name: &str) -> bool {
        let s = self.shape(name);
        match self.kind(name) {
            "string" => {
                !self.is_enum(name) && (s.get("min").is_some() || s.get("max").is_some() || s.get("pattern").is_some())
            }
            "integer" | "long" | "double" | "float" | "list" | "map" => {
                s.get("min").is_some() || s.get("max").is_some()
            }
            _ => false,
        }
    }

    /// A shape needs a check when it, or something inside it, carries a constraint. Only
    /// shapes used in inputs are checked.
    fn compute_checks(&mut self) {
        let inputs: Vec<String> = self.usage.iter().filter(|(_, u)| u.input).map(|(n, _)| n.clone()).collect();
        loop {
            let mut changed = false;
            for name in &inputs {
                if self.needs_check.contains(name) {
                    continue;
                }
                let own = self.has_own_constraint(name);
                let child = self.children(name).iter().any(|c| self.needs_check.contains(c));
                if own || child {
                    self.needs_check.insert(name.clone());
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// Box structure members that lead back to their own structure without passing through a
    /// list or map (which already allocate).
    fn compute_boxing(&mut self) {
        let structs: Vec<String> = self.usage.keys().filter(|n| self.kind(n) == "structure").cloned().collect();
        for s in &structs {
            for (mname, m) in self.members(s) {
                let target = m["shape"].as_str().unwrap();
                if self.kind(target) == "structure" && self.reaches_directly(target, s, &mut BTreeSet::new()) {
                    self.boxed.insert((s.clone(), mname.clone()));
                }
            }
        }
    }

    fn reaches_directly(&self, from: &str, to: &str, seen: &mut BTreeSet<String>) -> bool {
        if from == to {
            return true;
        }
        if !seen.insert(from.to_owned()) {
            return false;
        }
        self.members(from).iter().any(|(_, m)| {
            let t = m["shape"].as_str().unwrap();
            self.kind(t) == "structure" && self.reaches_directly(t, to, seen)
        })
    }

    fn members(&self, name: &str) -> Vec<(&'a String, &'a Value)> {
        self.shape(name)["members"].as_object().map(|m| m.iter().collect()).unwrap_or_default()
    }

    fn required(&self, name: &str) -> BTreeSet<&'a str> {
        self.shape(name)["required"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default()
    }

    fn rust_type(&self, shape: &str) -> String {
        match self.kind(shape) {
            "structure" => {
                if self.shape(shape).get("document").and_then(Value::as_bool) == Some(true) {
                    "serde_json::Value".into()
                } else {
                    self.names[shape].clone()
                }
            }
            "string" => {
                if self.is_enum(shape) {
                    self.names[shape].clone()
                } else {
                    "String".into()
                }
            }
            "integer" => "i32".into(),
            "long" => "i64".into(),
            "double" => "f64".into(),
            "float" => "f32".into(),
            "boolean" => "bool".into(),
            "timestamp" => "Timestamp".into(),
            "blob" => "Blob".into(),
            "list" => format!("Vec<{}>", self.rust_type(self.shape(shape)["member"]["shape"].as_str().unwrap())),
            "map" => format!(
                "BTreeMap<{}, {}>",
                self.rust_type(self.shape(shape)["key"]["shape"].as_str().unwrap()),
                self.rust_type(self.shape(shape)["value"]["shape"].as_str().unwrap())
            ),
            other => panic!("unsupported shape type {other} for {shape}"),
        }
    }

    /// A non-boxed primitive member: AWS always sends it, defaulting to zero or false.
    fn is_unboxed_primitive(&self, shape: &str, member: &Value) -> bool {
        let s = self.shape(shape);
        self.svc.primitive_defaults
            && matches!(self.kind(shape), "integer" | "long" | "double" | "float" | "boolean")
            && s.get("box").and_then(Value::as_bool) != Some(true)
            && member.get("box").and_then(Value::as_bool) != Some(true)
    }

    fn generate(mut self) -> Result<String> {
        let mut out = String::new();
        let meta = &self.model["metadata"];
        writeln!(
            out,
            "//! {} wire types, generated by `cargo xtask codegen` from botocore's `{}` model \
             (API version {}). Do not edit by hand.\n",
            meta["serviceFullName"].as_str().unwrap_or(self.svc.model),
            self.svc.model,
            meta["apiVersion"].as_str().unwrap_or("")
        )?;
        out.push_str("#![allow(clippy::all, missing_docs, non_camel_case_types, unused_imports)]\n\n");
        out.push_str("use std::collections::BTreeMap;\n");
        out.push_str("use serde::{Deserialize, Serialize};\n");
        out.push_str("use crate::shape::{Blob, Timestamp, Validate, Validator};\n\n");
        writeln!(out, "/// The `X-Amz-Target` prefix of this service's operations.")?;
        writeln!(out, "pub const TARGET_PREFIX: &str = {:?};", meta["targetPrefix"].as_str().unwrap_or(""))?;
        writeln!(out, "/// The service's signing name, as found in SigV4 credential scopes.")?;
        writeln!(
            out,
            "pub const SIGNING_NAME: &str = {:?};\n",
            meta["signingName"].as_str().or(meta["endpointPrefix"].as_str()).unwrap_or("")
        )?;

        self.gen_operations(&mut out)?;
        self.gen_errors(&mut out)?;

        let names: Vec<String> = self.usage.keys().cloned().collect();
        for name in &names {
            if self.kind(name) == "structure" {
                if self.shape(name).get("document").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                self.gen_struct(&mut out, name)?;
            } else if self.is_enum(name) {
                self.gen_enum(&mut out, name)?;
            }
        }
        self.gen_model(&mut out)?;
        let checks: Vec<String> = self.needs_check.iter().cloned().collect();
        for name in &checks {
            self.gen_check(&mut out, name)?;
        }
        for (name, pattern) in std::mem::take(&mut self.patterns) {
            writeln!(
                out,
                "static {}: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| \
                 regex::Regex::new({:?}).unwrap());",
                pattern_static(&name),
                format!("^(?:{})$", without_lookaround(&without_surrogates(&pattern)))
            )?;
        }
        Ok(out)
    }

    /// Emits `MODEL`: the service's names and protocols and the table of its shapes.
    fn gen_model(&self, out: &mut String) -> Result<()> {
        let meta = &self.model["metadata"];
        let text = |k: &str| meta[k].as_str().unwrap_or("").to_owned();
        let protocols: Vec<&str> = match meta["protocols"].as_array() {
            Some(a) => a.iter().filter_map(Value::as_str).collect(),
            None => vec![meta["protocol"].as_str().unwrap_or("json")],
        };
        let protocols: Vec<&str> = protocols
            .iter()
            .map(|p| match *p {
                "json" => Ok("Json"),
                "query" => Ok("Query"),
                "ec2" => Ok("Ec2"),
                "smithy-rpc-v2-cbor" => Ok("RpcV2Cbor"),
                other => Err(anyhow::anyhow!("protocol {other} is not supported")),
            })
            .collect::<Result<_>>()?;
        let ec2 = protocols == ["Ec2"];
        let mut ns = match &meta["xmlNamespace"] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o.get("uri").and_then(Value::as_str).unwrap_or("").to_owned(),
            _ => String::new(),
        };
        if !ns.is_empty() && !ns.ends_with('/') {
            ns.push('/');
        }
        let index: HashMap<&str, usize> = self.usage.keys().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let id = |n: &str| index[n];
        out.push_str("use crate::schema::{Kind, Member, Model, OperationSchema, Protocol, Shape};\n\n");
        out.push_str("/// The shapes of this service's operations, for the protocol codecs.\n");
        out.push_str("pub static SHAPES: &[Shape] = &[\n");
        for name in self.usage.keys() {
            let s = self.shape(name);
            let kind = match self.kind(name) {
                "structure" if s.get("document").and_then(Value::as_bool) == Some(true) => "Kind::Document".to_owned(),
                "structure" => {
                    let required = self.required(name);
                    let members: Vec<String> = self
                        .members(name)
                        .iter()
                        .map(|(mname, m)| {
                            let target = m["shape"].as_str().unwrap();
                            let location = m["locationName"].as_str();
                            let query = if ec2 {
                                m["queryName"].as_str().map(str::to_owned).or_else(|| location.map(capitalize))
                            } else {
                                location.map(str::to_owned)
                            }
                            .unwrap_or_else(|| mname.to_string());
                            let flattened = m["flattened"].as_bool().unwrap_or(false)
                                || self.shape(target)["flattened"].as_bool().unwrap_or(false);
                            format!(
                                "Member {{ name: {mname:?}, xml: {:?}, query: {query:?}, shape: {}, flattened: {flattened}, required: {} }}",
                                location.unwrap_or(mname),
                                id(target),
                                required.contains(mname.as_str()),
                            )
                        })
                        .collect();
                    format!("Kind::Structure(&[{}])", members.join(", "))
                }
                "list" => format!(
                    "Kind::List {{ member: {}, member_name: {:?} }}",
                    id(s["member"]["shape"].as_str().unwrap()),
                    s["member"]["locationName"].as_str().unwrap_or("member")
                ),
                "map" => format!(
                    "Kind::Map {{ key: {}, value: {}, key_name: {:?}, value_name: {:?} }}",
                    id(s["key"]["shape"].as_str().unwrap()),
                    id(s["value"]["shape"].as_str().unwrap()),
                    s["key"]["locationName"].as_str().unwrap_or("key"),
                    s["value"]["locationName"].as_str().unwrap_or("value"),
                ),
                "string" => "Kind::String".into(),
                "boolean" => "Kind::Boolean".into(),
                "integer" => "Kind::Integer".into(),
                "long" => "Kind::Long".into(),
                "float" => "Kind::Float".into(),
                "double" => "Kind::Double".into(),
                "timestamp" => "Kind::Timestamp".into(),
                "blob" => "Kind::Blob".into(),
                other => bail!("shape {name} has unsupported type {other}"),
            };
            writeln!(out, "    Shape {{ name: {name:?}, kind: {kind} }},")?;
        }
        out.push_str("];\n\n");
        out.push_str("/// The operations, in the order of [`Operation`].\n");
        out.push_str("pub static OPERATIONS: &[OperationSchema] = &[\n");
        for (name, op) in self.operations() {
            let shape_of = |k: &str| match op[k]["shape"].as_str() {
                Some(s) => format!("Some({})", id(s)),
                None => "None".into(),
            };
            writeln!(
                out,
                "    OperationSchema {{ name: {name:?}, input: {}, output: {}, result_wrapper: {:?} }},",
                shape_of("input"),
                shape_of("output"),
                op["output"]["resultWrapper"].as_str().unwrap_or("")
            )?;
        }
        out.push_str("];\n\n");
        writeln!(
            out,
            "/// The service's names and protocols, and its shapes.\npub static MODEL: Model = Model {{ module: {:?}, title: {:?}, signing_name: SIGNING_NAME, target_prefix: TARGET_PREFIX, json_version: {:?}, api_version: {:?}, xml_namespace: {:?}, protocols: &[{}], query_compatible: {}, shapes: SHAPES, operations: OPERATIONS }};\n",
            self.svc.module,
            text("serviceFullName"),
            text("jsonVersion"),
            text("apiVersion"),
            ns,
            protocols.iter().map(|p| format!("Protocol::{p}")).collect::<Vec<_>>().join(", "),
            meta.get("awsQueryCompatible").is_some(),
        )?;
        out.push_str("impl Operation {\n    /// The operation's shapes and Query result wrapper.\n");
        out.push_str(
            "    pub fn schema(self) -> &'static OperationSchema {\n        &OPERATIONS[self as usize]\n    }\n}\n\n",
        );
        Ok(())
    }

    fn gen_operations(&self, out: &mut String) -> Result<()> {
        let ops = self.operations();
        out.push_str("/// The operations of this service.\n");
        out.push_str("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum Operation {\n");
        for (name, _) in &ops {
            writeln!(out, "    {name},")?;
        }
        out.push_str("}\n\nimpl Operation {\n");
        writeln!(
            out,
            "    pub const ALL: &'static [Operation] = &[{}];",
            ops.iter().map(|(n, _)| format!("Operation::{n}")).collect::<Vec<_>>().join(", ")
        )?;
        out.push_str("    /// Parses the operation name that follows the target prefix.\n");
        out.push_str("    pub fn from_name(name: &str) -> Option<Self> {\n        Some(match name {\n");
        for (name, _) in &ops {
            writeln!(out, "            {name:?} => Operation::{name},")?;
        }
        out.push_str("            _ => return None,\n        })\n    }\n\n");
        out.push_str("    pub fn name(self) -> &'static str {\n        match self {\n");
        for (name, _) in &ops {
            writeln!(out, "            Operation::{name} => {name:?},")?;
        }
        out.push_str("        }\n    }\n}\n\n");
        Ok(())
    }

    fn gen_errors(&self, out: &mut String) -> Result<()> {
        let mut errors: Vec<(&String, &Value)> =
            self.shapes.iter().filter(|(_, s)| s.get("exception").and_then(Value::as_bool) == Some(true)).collect();
        errors.sort_by(|a, b| a.0.cmp(b.0));
        out.push_str("/// The exceptions this service's model declares.\n");
        out.push_str("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum ErrorCode {\n");
        for (name, _) in &errors {
            writeln!(out, "    {},", pascal(name))?;
        }
        out.push_str("}\n\nimpl ErrorCode {\n");
        let arms = |f: &dyn Fn(&str, &Value) -> String| -> String {
            errors
                .iter()
                .map(|(name, s)| format!("            ErrorCode::{} => {},\n", pascal(name), f(name, s)))
                .collect()
        };
        let code = |name: &str, s: &Value| format!("{:?}", s["error"]["code"].as_str().unwrap_or(name));
        let fault = |s: &Value| s.get("fault").and_then(Value::as_bool) == Some(true);
        let methods: [(&str, &str, String); 4] = [
            (
                "The error code: the `__type` of JSON answers, the `Code` of Query answers.",
                "name(self) -> &'static str",
                arms(&code),
            ),
            (
                "The exception's shape name (the `__type` of a query-compatible service's JSON and CBOR answers).",
                "shape_name(self) -> &'static str",
                arms(&|name, _| format!("{name:?}")),
            ),
            (
                "The HTTP status AWS answers this exception with.",
                "status(self) -> u16",
                arms(&|_, s| {
                    s["error"]["httpStatusCode"].as_u64().unwrap_or(if fault(s) { 500 } else { 400 }).to_string()
                }),
            ),
            (
                "Whether the caller is at fault (`Sender`) rather than the service (`Receiver`).",
                "sender_fault(self) -> bool",
                arms(&|_, s| (!fault(s)).to_string()),
            ),
        ];
        for (doc, sig, body) in methods {
            writeln!(out, "    /// {doc}\n    pub fn {sig} {{\n        match self {{\n{body}        }}\n    }}\n")?;
        }
        out.push_str("}\n\n");
        out.push_str("impl crate::error::ErrorShape for ErrorCode {\n");
        for m in [
            "name(self) -> &'static str",
            "shape_name(self) -> &'static str",
            "status(self) -> u16",
            "sender_fault(self) -> bool",
        ] {
            let f = m.split('(').next().unwrap();
            writeln!(out, "    fn {m} {{\n        ErrorCode::{f}(self)\n    }}\n")?;
        }
        out.push_str("}\n\n");
        Ok(())
    }

    fn derives(&self, name: &str) -> &'static str {
        let u = self.usage[name];
        if u.output {
            "Serialize, Deserialize"
        } else {
            "Deserialize"
        }
    }

    fn gen_struct(&self, out: &mut String, name: &str) -> Result<()> {
        let rust = &self.names[name];
        let required = self.required(name);
        writeln!(out, "#[derive(Clone, Debug, Default, PartialEq, {})]", self.derives(name))?;
        writeln!(out, "pub struct {rust} {{")?;
        let mut used = BTreeSet::new();
        for (mname, m) in self.members(name) {
            let target = m["shape"].as_str().unwrap();
            let field = self.field_name(mname, &mut used);
            let mut ty = self.rust_type(target);
            if self.boxed.contains(&(name.to_owned(), mname.clone())) {
                ty = format!("Box<{ty}>");
            }
            let plain = field.trim_start_matches("r#");
            if plain != mname {
                writeln!(out, "    #[serde(rename = {mname:?})]")?;
            }
            if required.contains(mname.as_str()) {
                writeln!(out, "    pub {field}: {ty},")?;
            } else if self.is_unboxed_primitive(target, m) {
                writeln!(out, "    #[serde(default)]")?;
                writeln!(out, "    pub {field}: {ty},")?;
            } else {
                writeln!(out, "    #[serde(default, skip_serializing_if = \"Option::is_none\")]")?;
                writeln!(out, "    pub {field}: Option<{ty}>,")?;
            }
        }
        out.push_str("}\n\n");
        if self.usage[name].input {
            writeln!(out, "impl Validate for {rust} {{")?;
            if self.needs_check.contains(name) {
                writeln!(out, "    fn validate(&self, v: &mut Validator) {{ check_{}(v, self) }}", snake(name))?;
            } else {
                writeln!(out, "    fn validate(&self, _: &mut Validator) {{}}")?;
            }
            out.push_str("}\n\n");
        }
        Ok(())
    }

    fn field_name(&self, member: &str, used: &mut BTreeSet<String>) -> String {
        let mut f = snake(member);
        while !used.insert(f.clone()) {
            f.push('_');
        }
        if RUST_KEYWORDS.contains(&f.as_str()) {
            format!("r#{f}")
        } else {
            f
        }
    }

    fn gen_enum(&self, out: &mut String, name: &str) -> Result<()> {
        let rust = &self.names[name];
        let values: Vec<&str> =
            self.shape(name)["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let mut variants = Vec::new();
        let mut used = BTreeSet::new();
        for v in &values {
            let mut var = variant_name(v);
            while !used.insert(var.clone()) {
                var.push('_');
            }
            variants.push(var);
        }
        writeln!(
            out,
            "#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, {})]",
            self.derives(name)
        )?;
        writeln!(out, "pub enum {rust} {{")?;
        for (i, (var, v)) in variants.iter().zip(&values).enumerate() {
            if i == 0 {
                out.push_str("    #[default]\n");
            }
            writeln!(out, "    #[serde(rename = {v:?})]\n    {var},")?;
        }
        out.push_str("}\n\n");
        writeln!(out, "impl {rust} {{")?;
        writeln!(
            out,
            "    pub const VALUES: &'static [&'static str] = &[{}];",
            values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ")
        )?;
        out.push_str("    pub fn as_str(self) -> &'static str {\n        match self {\n");
        for (var, v) in variants.iter().zip(&values) {
            writeln!(out, "            {rust}::{var} => {v:?},")?;
        }
        out.push_str("        }\n    }\n");
        out.push_str("    pub fn from_str_opt(s: &str) -> Option<Self> {\n        Some(match s {\n");
        for (var, v) in variants.iter().zip(&values) {
            writeln!(out, "            {v:?} => {rust}::{var},")?;
        }
        out.push_str("            _ => return None,\n        })\n    }\n}\n\n");
        writeln!(out, "impl std::fmt::Display for {rust} {{")?;
        out.push_str("    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }\n}\n\n");
        Ok(())
    }

    /// Emits `fn check_<shape>(v, value)` for a shape that needs checks.
    fn gen_check(&mut self, out: &mut String, name: &str) -> Result<()> {
        let s = self.shape(name);
        let fname = format!("check_{}", snake(name));
        let ty = self.rust_type(name);
        let arg_ty = if ty == "String" { "str".to_owned() } else { ty.clone() };
        writeln!(out, "#[allow(unused_variables)]\nfn {fname}(v: &mut Validator, x: &{arg_ty}) {{")?;
        let min = s.get("min").and_then(Value::as_f64);
        let max = s.get("max").and_then(Value::as_f64);
        match self.kind(name) {
            "structure" => {
                let required = self.required(name);
                let mut used = BTreeSet::new();
                for (mname, m) in self.members(name) {
                    let target = m["shape"].as_str().unwrap();
                    let field = self.field_name(mname, &mut used);
                    if !self.needs_check.contains(target) {
                        continue;
                    }
                    let call = format!("check_{}(v, f)", snake(target));
                    let boxed = self.boxed.contains(&(name.to_owned(), mname.clone()));
                    let deref = if boxed { "&**" } else { "" };
                    if required.contains(mname.as_str()) {
                        writeln!(out, "    {{ let f = {deref}&x.{field}; v.enter({mname:?}); {call}; v.leave(); }}")?;
                    } else if self.is_unboxed_primitive(target, m) {
                        // Absent decodes to zero: only a value that was sent is checked.
                        writeln!(
                            out,
                            "    if x.{field} != {}::default() {{ let f = &x.{field}; v.enter({mname:?}); {call}; v.leave(); }}",
                            self.rust_type(target)
                        )?;
                    } else {
                        writeln!(out, "    if let Some(f) = &x.{field} {{ let f = {deref}f; v.enter({mname:?}); {call}; v.leave(); }}")?;
                    }
                }
            }
            "list" => {
                let member = s["member"]["shape"].as_str().unwrap();
                if min.is_some() || max.is_some() {
                    writeln!(
                        out,
                        "    v.length(x.len(), {}, {}, || format!(\"{{:?}}\", x));",
                        opt_usize(min),
                        opt_usize(max)
                    )?;
                }
                if self.needs_check.contains(member) {
                    writeln!(
                        out,
                        "    for (i, f) in x.iter().enumerate() {{ v.enter_index(i); check_{}(v, f); v.leave(); }}",
                        snake(member)
                    )?;
                }
            }
            "map" => {
                let key = s["key"]["shape"].as_str().unwrap();
                let value = s["value"]["shape"].as_str().unwrap();
                if min.is_some() || max.is_some() {
                    writeln!(
                        out,
                        "    v.length(x.len(), {}, {}, || format!(\"{{:?}}\", x));",
                        opt_usize(min),
                        opt_usize(max)
                    )?;
                }
                if self.needs_check.contains(key) {
                    writeln!(out, "    for k in x.keys() {{ v.enter_key(); check_{}(v, k); v.leave(); }}", snake(key))?;
                }
                if self.needs_check.contains(value) {
                    writeln!(
                        out,
                        "    for (k, f) in x.iter() {{ v.enter_value(); check_{}(v, f); v.leave(); }}",
                        snake(value)
                    )?;
                }
            }
            "string" => {
                if min.is_some() || max.is_some() {
                    writeln!(
                        out,
                        "    v.length(x.chars().count(), {}, {}, || x.to_string());",
                        opt_usize(min),
                        opt_usize(max)
                    )?;
                }
                if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                    self.patterns.insert(name.to_owned(), p.to_owned());
                    writeln!(out, "    v.pattern(x, &{}, {:?});", pattern_static(name), p)?;
                }
            }
            "integer" | "long" => {
                writeln!(out, "    v.range(*x as f64, {}, {}, || x.to_string());", opt_f64(min), opt_f64(max))?;
            }
            "double" | "float" => {
                writeln!(out, "    v.range(*x as f64, {}, {}, || x.to_string());", opt_f64(min), opt_f64(max))?;
            }
            other => bail!("cannot check shape {name} of type {other}"),
        }
        out.push_str("}\n\n");
        Ok(())
    }
}

fn opt_usize(v: Option<f64>) -> String {
    v.map(|n| format!("Some({})", n as u64)).unwrap_or_else(|| "None".into())
}

fn opt_f64(v: Option<f64>) -> String {
    v.map(|n| format!("Some({n:?})")).unwrap_or_else(|| "None".into())
}

/// `pattern` without its lookaround groups (`(?=...)`, `(?!...)`, `(?<=...)`, `(?<!...)`),
/// which the `regex` crate cannot compile: the check accepts a little more than the model
/// says (a name may start with `arn:`, a service name may be longer than 127 characters) and
/// services check such rules by hand. Error messages still quote the model's pattern.
fn without_lookaround(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut class = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            out.extend(&chars[i..(i + 2).min(chars.len())]);
            i += 2;
            continue;
        }
        if class {
            class = c != ']';
        } else if c == '[' {
            class = true;
        } else if c == '(' && chars.get(i + 1) == Some(&'?') {
            let rest: String = chars[i + 2..].iter().take(2).collect();
            if rest.starts_with('=') || rest.starts_with('!') || rest == "<=" || rest == "<!" {
                i = group_end(&chars, i);
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// `pattern` with `\\p{Print}` as the ASCII range it is in Java, and with Java's UTF-16
/// surrogate pairs (`\uD800\uDC00`, as botocore's models
/// write characters beyond the BMP) as the code points they encode (`\x{10000}`): the
/// `regex` crate refuses a surrogate as not a Unicode scalar value.
fn without_surrogates(pattern: &str) -> String {
    fn unit(s: &str) -> Option<u32> {
        let hex = s.strip_prefix("\\u")?.get(..4)?;
        u32::from_str_radix(hex, 16).ok()
    }
    let mut out = String::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        if let (Some(hi), Some(lo)) = (unit(rest), rest.get(6..).and_then(unit)) {
            if (0xD800..0xDC00).contains(&hi) && (0xDC00..0xE000).contains(&lo) {
                let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                out.push_str(&format!("\\x{{{cp:X}}}"));
                rest = &rest[12..];
                continue;
            }
        }
        // Java's POSIX class (ASCII unless UNICODE_CHARACTER_CLASS), unknown to `regex`.
        if let Some(r) = rest.strip_prefix("\\p{Print}") {
            out.push_str("[\\x20-\\x7E]");
            rest = r;
            continue;
        }
        let c = rest.chars().next().expect("not empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The index just past the group that opens at `start`.
fn group_end(chars: &[char], start: usize) -> usize {
    let (mut depth, mut i, mut class) = (0usize, start, false);
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            ']' if class => class = false,
            _ if class => {}
            '[' => class = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

fn pattern_static(shape: &str) -> String {
    format!("PATTERN_{}", snake(shape).to_uppercase())
}

/// `clusterArn` → `cluster_arn`, `runningEC2TasksCount` → `running_ec2_tasks_count`.
pub fn snake(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = if i > 0 { Some(chars[i - 1]) } else { None };
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// `vpcSet` → `VpcSet` (EC2's query names).
fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

/// Shape names are already PascalCase; strip anything an identifier cannot hold.
fn pascal(s: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(if upper { c.to_ascii_uppercase() } else { c });
            upper = false;
        } else {
            upper = true;
        }
    }
    out
}

/// `ACTIVE` → `Active`, `CMD-SHELL` → `CmdShell`, `awsvpcTrunking` → `AwsvpcTrunking`,
/// `1.4.0` → `V1_4_0`.
pub fn variant_name(v: &str) -> String {
    let parts: Vec<&str> = v.split(|c: char| !c.is_ascii_alphanumeric()).filter(|p| !p.is_empty()).collect();
    let mut out = String::new();
    let numeric = parts.first().is_some_and(|p| p.starts_with(|c: char| c.is_ascii_digit()));
    for (i, p) in parts.iter().enumerate() {
        if numeric && i > 0 {
            out.push('_');
        }
        let uniform = p.chars().all(|c| !c.is_ascii_lowercase()) || p.chars().all(|c| !c.is_ascii_uppercase());
        let mut chars = p.chars();
        let first = chars.next().unwrap();
        out.push(first.to_ascii_uppercase());
        if uniform {
            out.extend(chars.map(|c| c.to_ascii_lowercase()));
        } else {
            out.extend(chars);
        }
    }
    if out.is_empty() {
        out.push_str("Empty");
    }
    if numeric {
        out.insert(0, 'V');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(snake("clusterArn"), "cluster_arn");
        assert_eq!(snake("runningEC2TasksCount"), "running_ec2_tasks_count");
        assert_eq!(snake("ECSManaged"), "ecs_managed");
        assert_eq!(snake("type"), "type");
        assert_eq!(snake("NextToken"), "next_token");
        assert_eq!(variant_name("ACTIVE"), "Active");
        assert_eq!(variant_name("CMD-SHELL"), "CmdShell");
        assert_eq!(variant_name("awsvpcTrunking"), "AwsvpcTrunking");
        assert_eq!(variant_name("awsvpc"), "Awsvpc");
        assert_eq!(variant_name("X86_64"), "X8664");
        assert_eq!(variant_name("1.4.0"), "V1_4_0");
    }

    #[test]
    fn lookarounds_are_dropped() {
        assert_eq!(
            without_surrogates("[\\u0020-\\uD7FF\\uE000-\\uFFFD\\uD800\\uDC00-\\uDBFF\\uDFFF\\r]"),
            "[\\u0020-\\uD7FF\\uE000-\\uFFFD\\x{10000}-\\x{10FFFF}\\r]"
        );
        assert_eq!(without_surrogates("\\p{Print}+"), "[\\x20-\\x7E]+");
        assert_eq!(without_lookaround("^(?!arn:)[!-~]{1,253}$"), "^[!-~]{1,253}$");
        assert_eq!(without_lookaround("((?=^.{1,127}$)^(a|[b(])$)|(^\\.$)"), "(^(a|[b(])$)|(^\\.$)");
        assert_eq!(without_lookaround("(?!((^[ ]+.*)|(.*[ ]+$))).+"), ".+");
        // Escaped parentheses and character classes are not groups.
        assert_eq!(without_lookaround("^[a-z(?!]+\\(?!x$"), "^[a-z(?!]+\\(?!x$");
    }

    /// The checked-in generated code must match what the generator makes from the models.
    #[test]
    fn generated_code_is_fresh() {
        let root = workspace_root();
        for (path, code) in generate_all(&root).unwrap() {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(current == code, "{} is stale: run `cargo xtask codegen` and commit the result", path.display());
        }
    }
}
