//! PutAccountSetting, PutAccountSettingDefault, ListAccountSettings, DeleteAccountSetting.
//!
//! The account default and the root user's own setting are one and the same, as in ECS:
//! changing the root user's setting changes the default for everyone without their own.

use bytes::Bytes;
use estiba_api::ecs::*;
use estiba_core::{page, settings, EcsError};
use estiba_store::{Compare, Op, Txn};

use super::{json, put, Ctx, Result};
use crate::{keys, Server};

fn principal(cx: &Ctx, p: Option<&str>) -> Result<String> {
    match p {
        None => Ok(cx.scope.root_arn()),
        Some(p) if p.starts_with("arn:") && p.contains(":iam::") => Ok(p.to_owned()),
        Some(p) => Err(EcsError::invalid(format!(
            "principalArn must be the ARN of an IAM user, role or root user, got '{p}'."
        ))),
    }
}

async fn put_setting(
    s: &Server,
    cx: &Ctx,
    name: SettingName,
    value: &str,
    who: String,
    default: bool,
) -> Result<Setting> {
    settings::validate(name, value, default)?;
    let setting = Setting {
        name: Some(name),
        value: Some(value.to_owned()),
        principal_arn: Some(who.clone()),
        r#type: Some(SettingType::User),
    };
    let key = keys::setting(&cx.scope, &who, name.as_str());
    s.transact::<_, EcsError>(|_| Ok((Txn::new().then(put(&key, &setting)), ()))).await?;
    Ok(setting)
}

pub async fn put_setting_for(s: &Server, cx: &Ctx, req: PutAccountSettingRequest) -> Result<Bytes> {
    let who = principal(cx, req.principal_arn.as_deref())?;
    let setting = put_setting(s, cx, req.name, &req.value, who, false).await?;
    Ok(json(&PutAccountSettingResponse { setting: Some(setting) }))
}

pub async fn put_default(s: &Server, cx: &Ctx, req: PutAccountSettingDefaultRequest) -> Result<Bytes> {
    let who = cx.scope.root_arn();
    let setting = put_setting(s, cx, req.name, &req.value, who, true).await?;
    Ok(json(&PutAccountSettingDefaultResponse { setting: Some(setting) }))
}

pub async fn delete(s: &Server, cx: &Ctx, req: DeleteAccountSettingRequest) -> Result<Bytes> {
    let who = principal(cx, req.principal_arn.as_deref())?;
    let key = keys::setting(&cx.scope, &who, req.name.as_str());
    let setting = s
        .transact::<_, EcsError>(|st| {
            let d = st.settings.get(&key).ok_or_else(|| {
                EcsError::invalid(format!("The account setting {} is not set for {who}.", req.name.as_str()))
            })?;
            Ok((Txn::new().when(Compare::mod_revision(&key, d.rev)).then(Op::delete(&key)), d.value.clone()))
        })
        .await?;
    Ok(json(&DeleteAccountSettingResponse { setting: Some(setting) }))
}

pub async fn list(s: &Server, cx: &Ctx, req: ListAccountSettingsRequest) -> Result<Bytes> {
    let limit = page::limit(Some(req.max_results), 10, 10)?;
    let who = principal(cx, req.principal_arn.as_deref())?;
    let root = cx.scope.root_arn();
    let st = s.view.read();
    let lookup =
        |p: &str, n: SettingName| st.settings.get(&keys::setting(&cx.scope, p, n.as_str())).map(|d| d.value.clone());
    let names: Vec<SettingName> = match req.name {
        Some(n) => vec![n],
        None => SettingName::VALUES.iter().filter_map(|v| SettingName::from_str_opt(v)).collect(),
    };
    let mut out = Vec::new();
    for n in names {
        let found = if req.effective_settings {
            Some(lookup(&who, n).or_else(|| lookup(&root, n)).unwrap_or_else(|| Setting {
                name: Some(n),
                value: Some(settings::aws_default(n).into()),
                principal_arn: Some(root.clone()),
                r#type: Some(SettingType::AwsManaged),
            }))
        } else {
            lookup(&who, n)
        };
        if let Some(setting) = found {
            if req.value.as_ref().is_none_or(|v| setting.value.as_ref() == Some(v)) {
                out.push(setting);
            }
        }
    }
    let p = page::paginate(
        out,
        |s| s.name.map(|n| n.as_str()).unwrap_or("").to_owned(),
        req.next_token.as_deref(),
        limit,
        false,
    )?;
    Ok(json(&ListAccountSettingsResponse { settings: Some(p.items), next_token: p.next_token }))
}
