//! Account settings: names, allowed values and AWS's defaults.

use estiba_api::ecs::SettingName;

use crate::bail;
use crate::error::Result;

/// The value AWS uses when nobody set one.
pub fn aws_default(name: SettingName) -> &'static str {
    match name {
        SettingName::ServiceLongArnFormat
        | SettingName::TaskLongArnFormat
        | SettingName::ContainerInstanceLongArnFormat => "enabled",
        SettingName::AwsvpcTrunking | SettingName::ContainerInsights | SettingName::FargateFIPSMode => "disabled",
        SettingName::TagResourceAuthorization => "on",
        SettingName::FargateTaskRetirementWaitPeriod => "7",
        SettingName::GuardDutyActivate => "off",
        SettingName::DefaultLogDriverMode => "non-blocking",
        SettingName::FargateEventWindows => "disabled",
    }
}

fn allowed(name: SettingName) -> &'static [&'static str] {
    match name {
        SettingName::ServiceLongArnFormat
        | SettingName::TaskLongArnFormat
        | SettingName::ContainerInstanceLongArnFormat
        | SettingName::AwsvpcTrunking
        | SettingName::FargateFIPSMode
        | SettingName::FargateEventWindows => &["enabled", "disabled"],
        SettingName::ContainerInsights => &["enabled", "disabled", "enhanced"],
        SettingName::TagResourceAuthorization | SettingName::GuardDutyActivate => &["on", "off"],
        SettingName::FargateTaskRetirementWaitPeriod => &["0", "7", "14"],
        SettingName::DefaultLogDriverMode => &["blocking", "non-blocking"],
    }
}

/// Checks a value for PutAccountSetting (`default == false`) or PutAccountSettingDefault.
pub fn validate(name: SettingName, value: &str, default: bool) -> Result<()> {
    let ok = allowed(name);
    if !ok.contains(&value) {
        bail!(invalid, "Invalid value '{value}' for setting {}. Valid values are: {}.", name.as_str(), ok.join(", "));
    }
    if !default && matches!(name, SettingName::FargateFIPSMode | SettingName::FargateTaskRetirementWaitPeriod) {
        bail!(
            invalid,
            "The {} setting can only be changed for the whole account, with PutAccountSettingDefault.",
            name.as_str()
        );
    }
    if name == SettingName::GuardDutyActivate {
        bail!(invalid, "The guardDutyActivate setting is read-only: it is managed through GuardDuty.");
    }
    Ok(())
}
