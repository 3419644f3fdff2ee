//! What reminders say (DESIGN §6): the reminder, the escalation notice and the fallback note, in
//! the recipient's language. They are templates like the mail templates — embedded from
//! `templates/reminders/`, each overridable by a file of the same name in `mail.templates_dir`
//! — so that an operator words them without a rebuild. Every template is rendered with sample
//! data when it is loaded: a broken override stops the server at start, naming the file, not
//! the scheduler at night. The first line of a reminder or escalation text is its title, the
//! rest its body.
use std::{fmt, path::Path};

use crate::mail::template_set::{self, Origins, describe};
use anyhow::anyhow;
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::{
    error::{Error, Result},
    mail::compose::Locale,
    model::{Channel, Instance, Task},
};

/// The template file names, with their embedded defaults.
pub(crate) const TEMPLATES: [(&str, &str); 6] = [
    (
        "reminder.zh-CN.txt",
        include_str!("../../templates/reminders/reminder.zh-CN.txt"),
    ),
    (
        "reminder.en.txt",
        include_str!("../../templates/reminders/reminder.en.txt"),
    ),
    (
        "escalation.zh-CN.txt",
        include_str!("../../templates/reminders/escalation.zh-CN.txt"),
    ),
    (
        "escalation.en.txt",
        include_str!("../../templates/reminders/escalation.en.txt"),
    ),
    (
        "fallback_note.zh-CN.txt",
        include_str!("../../templates/reminders/fallback_note.zh-CN.txt"),
    ),
    (
        "fallback_note.en.txt",
        include_str!("../../templates/reminders/fallback_note.en.txt"),
    ),
];

/// What the templates see.
#[derive(Debug, Default, Serialize)]
struct Context<'a> {
    process: &'a str,
    business_key: &'a str,
    task_name: &'a str,
    /// The task's assignee (escalation notices name who holds the work).
    assignee: &'a str,
    /// Reminders sent so far, and in all (0 for a manual reminder).
    sent: i64,
    count: i64,
    /// The sender's own words of a manual reminder, or empty.
    message: &'a str,
    /// The channel that failed (fallback notes): inbox, email or sms.
    failed: &'a str,
}

/// The loaded, checked reminder templates.
pub struct ReminderTexts {
    env: Environment<'static>,
    origins: Origins,
}

impl fmt::Debug for ReminderTexts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.origins.fmt(f)
    }
}

impl ReminderTexts {
    /// Embedded defaults; a file with the same name in `dir` overrides one. Any syntax or render
    /// error → Err naming the template file and the reason.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        // Printing an undefined variable (a misspelt name in an override) fails.
        let (env, origins) = template_set::load(
            dir,
            &TEMPLATES,
            "reminder template",
            Some(UndefinedBehavior::SemiStrict),
        )?;
        let texts = Self { env, origins };
        texts.check()?;
        Ok(texts)
    }

    /// Renders every template with sample data, with and without the optional parts.
    fn check(&self) -> anyhow::Result<()> {
        for (name, _) in TEMPLATES {
            for ctx in [
                Context {
                    process: "报销审批",
                    business_key: "EXP-2024-001",
                    task_name: "经理审批",
                    assignee: "alice",
                    sent: 2,
                    count: 3,
                    message: "请尽快处理",
                    failed: "email",
                },
                Context {
                    process: "Expense",
                    task_name: "Manager approval",
                    assignee: "bob",
                    failed: "inbox",
                    ..Context::default()
                },
            ] {
                self.render_raw(name, &ctx)?;
            }
        }
        Ok(())
    }

    fn render_raw(&self, name: &str, ctx: &Context<'_>) -> anyhow::Result<String> {
        let fail = |e: minijinja::Error| {
            let origin = self.origins.of(name);
            anyhow!("reminder template {}: {e}", describe(name, origin))
        };
        let text = self
            .env
            .get_template(name)
            .map_err(fail)?
            .render(minijinja::value::Serde(ctx))
            .map_err(fail)?;
        // The file's own last line break is not part of the text.
        Ok(text.strip_suffix('\n').map(str::to_owned).unwrap_or(text))
    }

    fn render(&self, kind: &str, locale: Locale, ctx: &Context<'_>) -> Result<String> {
        let name = format!("{kind}.{}.txt", locale.tag());
        self.render_raw(&name, ctx).map_err(Error::Internal)
    }

    /// (title, body): the first line and the rest.
    fn titled(&self, kind: &str, locale: Locale, ctx: &Context<'_>) -> Result<(String, String)> {
        let text = self.render(kind, locale, ctx)?;
        Ok(match text.split_once('\n') {
            Some((title, body)) => (title.to_string(), body.to_string()),
            None => (text, String::new()),
        })
    }

    /// A reminder of `task` (`count` 0: a manual one), with the sender's `message` if any.
    #[allow(clippy::too_many_arguments)]
    pub fn reminder(
        &self,
        locale: Locale,
        process: &str,
        task: &Task,
        instance: &Instance,
        sent: i64,
        count: i64,
        message: &str,
    ) -> Result<(String, String)> {
        let ctx = Context {
            process,
            business_key: &instance.business_key,
            task_name: &task.name,
            assignee: &task.assignee,
            sent,
            count,
            message,
            failed: "",
        };
        self.titled("reminder", locale, &ctx)
    }

    /// An escalation notice: `task` is still open after `sent` reminders.
    pub fn escalation(
        &self,
        locale: Locale,
        process: &str,
        task: &Task,
        instance: &Instance,
        sent: i64,
    ) -> Result<(String, String)> {
        let ctx = Context {
            process,
            business_key: &instance.business_key,
            task_name: &task.name,
            assignee: &task.assignee,
            sent,
            ..Context::default()
        };
        self.titled("escalation", locale, &ctx)
    }

    /// The note put before a reminder sent on the next channel because `failed` failed.
    pub fn fallback_note(&self, locale: Locale, failed: Channel) -> Result<String> {
        let ctx = Context {
            failed: failed.as_str(),
            ..Context::default()
        };
        self.render("fallback_note", locale, &ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts() -> ReminderTexts {
        ReminderTexts::load(None).expect("embedded reminder templates load")
    }

    fn task() -> Task {
        Task {
            id: "t1".into(),
            instance_id: "i1".into(),
            definition_key: "expense".into(),
            definition_version: 1,
            business_key: String::new(),
            activity_id: "a1".into(),
            name: "经理审批".into(),
            assignee: "alice".into(),
            status: crate::model::TaskStatus::Open,
            outcome: String::new(),
            comment: String::new(),
            completed_by: String::new(),
            completed_via: None,
            group_id: String::new(),
            from_activity: "s".into(),
            created_at: 0,
            completed_at: None,
            owner: String::new(),
            delegation: crate::model::Delegation::None,
        }
    }

    fn instance(business_key: &str) -> Instance {
        Instance {
            id: "i1".into(),
            definition_key: "expense".into(),
            definition_version: 1,
            business_key: business_key.into(),
            variables: Default::default(),
            status: crate::model::InstanceStatus::Running,
            error: String::new(),
            started_by: "bob".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn the_embedded_texts_say_what_the_code_used_to_say() {
        let t = texts();
        let (task, keyed, unkeyed) = (task(), instance("EXP-1"), instance(""));
        assert_eq!(
            t.reminder(Locale::ZhCn, "报销", &task, &keyed, 2, 3, "")
                .unwrap(),
            (
                "催办：经理审批".to_string(),
                "「报销」 (EXP-1)的「经理审批」正在等您处理（第 2/3 次催办）。".to_string()
            )
        );
        assert_eq!(
            t.reminder(Locale::En, "Expense", &task, &unkeyed, 0, 0, "please\nnow")
                .unwrap(),
            (
                "Reminder: 经理审批".to_string(),
                "\"经理审批\" of Expense is waiting for you.\nplease\nnow".to_string()
            )
        );
        assert_eq!(
            t.reminder(Locale::En, "Expense", &task, &keyed, 1, 2, "")
                .unwrap()
                .1,
            "\"经理审批\" of Expense (EXP-1) is waiting for you (reminder 1 of 2)."
        );
        assert_eq!(
            t.reminder(Locale::ZhCn, "报销", &task, &unkeyed, 0, 0, "")
                .unwrap()
                .1,
            "「报销」的「经理审批」正在等您处理。"
        );
        assert_eq!(
            t.escalation(Locale::ZhCn, "报销", &task, &keyed, 3)
                .unwrap(),
            (
                "升级提醒：经理审批".to_string(),
                "「报销」（EXP-1）的「经理审批」已催办 3 次仍未处理，当前处理人：alice。"
                    .to_string()
            )
        );
        assert_eq!(
            t.escalation(Locale::En, "Expense", &task, &keyed, 3).unwrap(),
            (
                "Escalation: 经理审批".to_string(),
                "\"经理审批\" of Expense (EXP-1) is still open after 3 reminders; it is assigned to alice."
                    .to_string()
            )
        );
        for (channel, zh) in [
            (Channel::Email, "（邮件未能送达，改由此渠道提醒）"),
            (Channel::Sms, "（短信未能送达，改由此渠道提醒）"),
            (Channel::Inbox, "（站内消息未能送达，改由此渠道提醒）"),
        ] {
            assert_eq!(t.fallback_note(Locale::ZhCn, channel).unwrap(), zh);
        }
        assert_eq!(
            t.fallback_note(Locale::En, Channel::Sms).unwrap(),
            "(The sms reminder could not be delivered.)"
        );
    }

    #[test]
    fn a_file_in_the_template_directory_overrides_one_and_a_broken_one_names_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::write(
            dir.join("reminder.en.txt"),
            "Nudge: {{ task_name }}\nPlease look at {{ task_name }}.\n",
        )
        .unwrap();
        let t = ReminderTexts::load(Some(&dir)).unwrap();
        assert_eq!(
            t.reminder(Locale::En, "Expense", &task(), &instance(""), 1, 2, "")
                .unwrap(),
            (
                "Nudge: 经理审批".to_string(),
                "Please look at 经理审批.".to_string()
            )
        );
        assert!(format!("{t:?}").contains("reminder.en.txt"));

        std::fs::write(dir.join("escalation.en.txt"), "{{ no_such_value }}\n").unwrap();
        let error = ReminderTexts::load(Some(&dir)).unwrap_err().to_string();
        assert!(
            error.contains("escalation.en.txt") && error.contains(&dir.display().to_string()),
            "{error}"
        );
    }
}
