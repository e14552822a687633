//! AWS STS (Query protocol, version 2011-06-15): `GetCallerIdentity`, answered from the
//! verified caller's key (or the account's root when auth is off). Served by the front door
//! before the service table: STS has one operation here and no state, so it has no generated
//! model. `AssumeRole` and the credentials it issues are later work; they will be keys with a
//! session token and an expiry in the same [`estiba_auth::Keyring`].

use bytes::Bytes;
use estiba_api::protocol::query;
use hyper::{Response, StatusCode};

use crate::body::{self, Body};

pub const SIGNING_NAME: &str = "sts";
pub const VERSION: &str = "2011-06-15";
const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// Who is asking, as GetCallerIdentity tells it.
pub struct Caller {
    pub arn: String,
    pub user_id: String,
    pub account: String,
}

impl Caller {
    pub fn of(c: &estiba_auth::Credential) -> Caller {
        Caller { arn: c.arn(), user_id: c.user_id(), account: c.account.clone() }
    }

    /// The account's root, for a server without auth.
    pub fn root(account: &str) -> Caller {
        Caller { arn: format!("arn:aws:iam::{account}:root"), user_id: account.to_owned(), account: account.to_owned() }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Answers an STS Query request.
pub fn answer(params: &query::Params, caller: &Caller, rid: &str) -> Response<Body> {
    let action = params.get("Action").unwrap_or("");
    let error = |status: StatusCode, code: &str, message: &str| {
        let body = query::error(query::Flavour::Query, NS, code, message, true, rid);
        body::response(status, Bytes::from(body), "text/xml")
    };
    if let Some(v) = params.get("Version").filter(|v| *v != VERSION) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("Could not find operation {action} for version {v}"),
        );
    }
    match action {
        "GetCallerIdentity" => {
            let xml = format!(
                "<GetCallerIdentityResponse xmlns=\"{NS}\"><GetCallerIdentityResult><Arn>{}</Arn><UserId>{}</UserId>\
                 <Account>{}</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>{rid}</RequestId>\
                 </ResponseMetadata></GetCallerIdentityResponse>",
                escape(&caller.arn),
                escape(&caller.user_id),
                escape(&caller.account)
            );
            body::response(StatusCode::OK, Bytes::from(xml), "text/xml")
        }
        "" => error(StatusCode::BAD_REQUEST, "MissingAction", "The request must contain the parameter Action"),
        other => error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("Could not find operation {other} for version {VERSION} (estiba serves GetCallerIdentity)"),
        ),
    }
}
