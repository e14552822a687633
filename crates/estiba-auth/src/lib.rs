//! Who is calling and what they may do: AWS Signature Version 4 verification ([`sigv4`]), the
//! credentials file and its keys ([`credentials`]), IAM-style policies ([`policy`]), and the
//! temporary credentials estiba issues itself, verified without a store ([`session`]);
//! [`sign`] signs estiba's own client requests.
//!
//! **Architecture invariant:** this crate does no network I/O and reads no clock: the caller
//! passes the request's parts, its body hash and the time. The only file it reads is the
//! credentials file (and the policy files it names), when asked to. It knows no service's
//! handlers; the front door (estiba-server's `front`) maps its errors to each protocol's
//! codes with [`AuthError::code`].

pub mod credentials;
pub mod policy;
pub mod session;
pub mod sign;
pub mod sigv4;
mod time;

pub use credentials::{Access, AssumedRole, Credential, Keyring, LoadError, Role};
pub use policy::{Decision, Policy, PolicyError};
pub use sigv4::{AuthError, Family, SignedRequest};
pub use time::{amz_date, parse_amz_date};
