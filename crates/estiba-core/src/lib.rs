//! The ECS control plane's logic: resource rules, validation, state machines and planners.
//!
//! Every function here is a pure function of its inputs: the current state snapshot, the
//! request, the time and an id source are passed in; the result is the new state or an
//! [`EcsError`] carrying AWS's exception name and message. Callers (the server's handlers and
//! controllers) read the store, call in here, and write what comes back.
//!
//! **Architecture invariant:** no I/O, no clock reads, no randomness. Time arrives as
//! [`ids::Now`], identifiers from an [`ids::Ids`] source.

pub mod alarms;
pub mod arn;
pub mod autoscaling;
pub mod awslogs;
pub mod capacity;
pub mod cluster;
pub mod daemon;
pub mod deploy;
pub mod discovery;
pub mod ecr;
pub mod elbv2;
pub mod elbv2_rules;
pub mod error;
pub mod exec;
pub mod express;
pub mod fargate;
pub mod ids;
pub mod instance;
pub mod keys;
pub mod load_balancing;
pub mod logs;
pub mod logs_insights;
pub mod logs_pattern;
pub mod metric_math;
pub mod metric_time;
pub mod names;
pub mod netblock;
pub mod node;
pub mod page;
pub mod placement;
pub mod query;
pub mod rollout;
pub mod secretsmanager;
pub mod service;
pub mod service_connect;
pub mod servicediscovery;
pub mod settings;
pub mod ssm;
pub mod tags;
pub mod task;
pub mod task_set;
pub mod taskdef;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod testing;
pub mod traffic;
pub mod vpc;

pub use arn::Scope;
pub use error::{EcsError, Result};
pub use ids::{Ids, Now};
