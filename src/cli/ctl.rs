//! `replyflow ctl`: a small client over the generated Rust stubs, for the README walkthrough and
//! for shell scripts. It speaks to a running server like any other client would.
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

use crate::{api::convert, proto::pb};

#[derive(Debug, Args)]
pub(super) struct CtlArgs {
    /// Server address.
    #[arg(long, env = "REPLYFLOW_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Act as this user (sent as x-user-id in development mode).
    #[arg(
        long = "as",
        env = "REPLYFLOW_USER",
        default_value = "admin",
        value_name = "USER"
    )]
    user: String,
    /// A JWT to send as `authorization: Bearer` (security.auth = jwt); `--as` is then unused.
    #[arg(
        long,
        env = "REPLYFLOW_TOKEN",
        value_name = "JWT",
        conflicts_with = "api_key"
    )]
    token: Option<String>,
    /// A service API key to send as `x-api-key`; with `--act-as`, the user it acts for.
    #[arg(long, env = "REPLYFLOW_API_KEY", value_name = "KEY")]
    api_key: Option<String>,
    /// With `--api-key` (a key with the act_as role): the user to act for (`x-act-as`).
    #[arg(long, value_name = "USER", requires = "api_key")]
    act_as: Option<String>,
    #[command(subcommand)]
    command: CtlCommand,
}

/// How ctl identifies itself: a JWT, an API key (acting for a user or not), or `x-user-id`.
#[derive(Debug)]
struct Caller<'a> {
    user: &'a str,
    token: Option<&'a str>,
    api_key: Option<&'a str>,
    act_as: Option<&'a str>,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Deploy a BPMN file (a new version when the process id exists).
    Deploy { file: PathBuf },
    /// List deployed definitions (latest versions).
    Definitions,
    /// Start an instance: `start expense --var manager=alice --var amount=20000`.
    Start {
        key: String,
        #[arg(long, default_value_t = 0)]
        version: i32,
        #[arg(long, default_value = "")]
        business_key: String,
        /// NAME=VALUE; VALUE is read as JSON when it parses (numbers, true, {"a":1}), else as text.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
    },
    /// Show an instance and its open tasks.
    Instance { id: String },
    /// List tasks (open ones unless --all).
    Tasks {
        #[arg(long, default_value = "")]
        assignee: String,
        #[arg(long, default_value = "")]
        instance: String,
        #[arg(long)]
        all: bool,
    },
    /// Complete a task as --as USER.
    Complete {
        task_id: String,
        outcome: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Manage the user directory.
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Add or replace a user.
    Add {
        id: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        email: String,
        #[arg(long, default_value = "")]
        manager: String,
        #[arg(long, default_value = "")]
        phone: String,
        #[arg(long, default_value = "zh-CN")]
        locale: String,
    },
    /// List users.
    List,
}

fn request<T>(message: T, caller: &Caller<'_>) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    if let Some(token) = caller.token {
        let value: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .context("--token must be printable ASCII")?;
        metadata.insert("authorization", value);
    } else if let Some(key) = caller.api_key {
        let value: MetadataValue<_> = key.parse().context("--api-key must be printable ASCII")?;
        metadata.insert(crate::api::auth::API_KEY_HEADER, value);
        if let Some(user) = caller.act_as {
            let value: MetadataValue<_> =
                user.parse().context("--act-as must be printable ASCII")?;
            metadata.insert(crate::api::auth::ACT_AS_HEADER, value);
        }
    } else {
        let value: MetadataValue<_> = caller
            .user
            .parse()
            .context("--as must be printable ASCII")?;
        metadata.insert(crate::api::auth::USER_ID_HEADER, value);
    }
    Ok(request)
}

fn parse_vars(vars: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for var in vars {
        let Some((name, value)) = var.split_once('=') else {
            bail!("--var {var:?}: expected NAME=VALUE");
        };
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        map.insert(name.to_string(), value);
    }
    Ok(map)
}

fn print_task(task: &pb::Task) {
    let status = pb::TaskStatus::try_from(task.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TASK_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_default();
    let outcomes: Vec<&str> = task.outcomes.iter().map(|o| o.id.as_str()).collect();
    println!(
        "{}  {:<20} {:<10} {:<9} instance={} outcomes={}{}",
        task.id,
        task.activity_id,
        task.assignee,
        status,
        task.process_instance_id,
        outcomes.join(","),
        if task.outcome.is_empty() {
            String::new()
        } else {
            format!(" outcome={} by={}", task.outcome, task.completed_by)
        }
    );
}

fn print_instance(instance: &pb::ProcessInstance) {
    let status = pb::InstanceStatus::try_from(instance.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("INSTANCE_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_default();
    println!(
        "instance {} {} v{} {status}{}",
        instance.id,
        instance.definition_key,
        instance.version,
        if instance.error.is_empty() {
            String::new()
        } else {
            format!(" error: {}", instance.error)
        }
    );
    let vars = instance
        .variables
        .clone()
        .and_then(|s| convert::struct_to_json(Some(s), "variables").ok())
        .unwrap_or_default();
    println!("variables {}", Value::Object(vars));
    for task in &instance.open_tasks {
        print_task(task);
    }
}

pub(super) async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let channel = Channel::from_shared(args.addr.clone())
        .context("--addr")?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.addr))?;
    let caller = Caller {
        user: args.user.as_str(),
        token: args.token.as_deref(),
        api_key: args.api_key.as_deref(),
        act_as: args.act_as.as_deref(),
    };
    let mut workflow = pb::workflow_service_client::WorkflowServiceClient::new(channel.clone());
    let mut tasks = pb::task_service_client::TaskServiceClient::new(channel.clone());
    let mut directory = pb::directory_service_client::DirectoryServiceClient::new(channel);
    match args.command {
        CtlCommand::Deploy { file } => {
            let bpmn_xml =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let message = pb::DeployDefinitionRequest {
                bpmn_xml,
                request_id: String::new(),
            };
            let def = workflow
                .deploy_definition(request(message, &caller)?)
                .await?
                .into_inner();
            println!(
                "deployed {} version {} ({})",
                def.key, def.version, def.name
            );
        }
        CtlCommand::Definitions => {
            let message = pb::ListDefinitionsRequest {
                latest_only: true,
                page_size: 500,
                ..Default::default()
            };
            let list = workflow
                .list_definitions(request(message, &caller)?)
                .await?
                .into_inner();
            for def in list.definitions {
                println!("{} v{}  {}", def.key, def.version, def.name);
            }
        }
        CtlCommand::Start {
            key,
            version,
            business_key,
            vars,
        } => {
            let message = pb::StartProcessRequest {
                definition_key: key,
                version,
                business_key,
                variables: Some(convert::json_to_struct(&parse_vars(&vars)?)),
                request_id: uuid::Uuid::now_v7().to_string(),
            };
            let instance = workflow
                .start_process(request(message, &caller)?)
                .await?
                .into_inner();
            print_instance(&instance);
        }
        CtlCommand::Instance { id } => {
            let message = pb::GetProcessInstanceRequest { id };
            let instance = workflow
                .get_process_instance(request(message, &caller)?)
                .await?
                .into_inner();
            print_instance(&instance);
        }
        CtlCommand::Tasks {
            assignee,
            instance,
            all,
        } => {
            let status = if all {
                pb::TaskStatus::Unspecified
            } else {
                pb::TaskStatus::Open
            };
            let mut page_token = String::new();
            loop {
                let message = pb::ListTasksRequest {
                    assignee: assignee.clone(),
                    process_instance_id: instance.clone(),
                    status: status as i32,
                    page_size: 500,
                    page_token,
                    ..Default::default()
                };
                let list = tasks
                    .list_tasks(request(message, &caller)?)
                    .await?
                    .into_inner();
                list.tasks.iter().for_each(print_task);
                if list.next_page_token.is_empty() {
                    break;
                }
                page_token = list.next_page_token;
            }
        }
        CtlCommand::Complete {
            task_id,
            outcome,
            comment,
        } => {
            let message = pb::CompleteTaskRequest {
                task_id,
                outcome,
                comment,
                variables: None,
                request_id: uuid::Uuid::now_v7().to_string(),
            };
            let done = tasks
                .complete_task(request(message, &caller)?)
                .await?
                .into_inner();
            if let Some(task) = &done.task {
                print_task(task);
            }
            if let Some(instance) = &done.instance {
                print_instance(instance);
            }
        }
        CtlCommand::Users(UsersCommand::Add {
            id,
            name,
            email,
            manager,
            phone,
            locale,
        }) => {
            let message = pb::UpsertUserRequest {
                user: Some(pb::User {
                    id,
                    display_name: name,
                    email,
                    email_aliases: Vec::new(),
                    phone,
                    manager_id: manager,
                    locale,
                    updated_at: None,
                }),
            };
            let user = directory
                .upsert_user(request(message, &caller)?)
                .await?
                .into_inner();
            println!(
                "user {} <{}> manager={}",
                user.id, user.email, user.manager_id
            );
        }
        CtlCommand::Users(UsersCommand::List) => {
            let message = pb::ListUsersRequest {
                page_size: 500,
                ..Default::default()
            };
            let list = directory
                .list_users(request(message, &caller)?)
                .await?
                .into_inner();
            for u in list.users {
                println!(
                    "{:<12} {:<24} <{}> manager={}",
                    u.id, u.display_name, u.email, u.manager_id
                );
            }
        }
    }
    Ok(())
}
