//! The `replyflow` binary as an operator and a script use it: real processes, real signals, real
//! files. `check` validates drawings offline; `serve` reads flags, a config file and
//! `REPLYFLOW_*` variables, logs the address it bound, and stops cleanly on SIGTERM; `migrate`
//! prepares a database; `ctl` drives the README walkthrough. The servers started here use SQLite
//! files whatever TEST_DATABASE says; `migrate` also runs against the backend under test. Last,
//! a Python grpcio client with stubs generated from proto/ drives the server.
use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::Duration,
};

use replyflow::proto::pb;

use crate::{
    helpers::{TestDb, eventually_blocking, repo_path, req, spawn_app},
    process::{KillOnDrop, ServerProcess},
};

const BIN: &str = env!("CARGO_BIN_EXE_replyflow");
/// How long a server may take to start listening, or to stop after SIGTERM.
const SERVER_DEADLINE: Duration = Duration::from_secs(30);
/// How long a one-shot command (check, migrate, ctl) may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// `replyflow ARGS` in `dir`, with an environment that holds no `REPLYFLOW_*` setting of the
/// caller's (each test sets its own), plain log lines, and the `info` level that logs the address.
fn replyflow(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("REPLYFLOW_") {
            command.env_remove(name);
        }
    }
    // `ctl` acts as "admin" by default; dev mode gives that user every role only when told.
    command
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,sqlx=warn")
        .env("REPLYFLOW_SECURITY_ADMINS", "admin");
    command
}

/// What a finished process left.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn describe(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    fn assert_success(&self, what: &str) -> &Self {
        assert!(self.status.success(), "{what} failed: {}", self.describe());
        self
    }

    fn assert_failure(&self, what: &str) -> &Self {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "{what} should exit non-zero: {}",
            self.describe()
        );
        self
    }
}

fn drain(mut from: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `command` to its end, killing it (and failing) after `deadline`.
fn run(mut command: Command, what: &str, deadline: Duration) -> Finished {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{what}: cannot start {command:?}: {err}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let mut child = KillOnDrop(child);
    let status = child.wait_within(deadline, what);
    Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// `replyflow ctl` against a running server.
trait Ctl {
    /// `replyflow ctl --addr <this server> ARGS`.
    fn ctl(&self, dir: &Path, args: &[&str]) -> Finished;
}

impl Ctl for ServerProcess {
    fn ctl(&self, dir: &Path, args: &[&str]) -> Finished {
        let url = self.url();
        let mut full = vec!["ctl", "--addr", url.as_str()];
        full.extend_from_slice(args);
        run(
            replyflow(dir, &full),
            &format!("replyflow {}", full.join(" ")),
            COMMAND_DEADLINE,
        )
    }
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path("examples"))
        .expect("examples/")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "bpmn"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples/*.bpmn");
    files
}

// ------------------------------------------------------------------------------------- check

#[test]
fn check_accepts_every_example() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = examples();
    let mut args = vec!["check"];
    args.extend(files.iter().map(|f| path_str(f)));
    let out = run(
        replyflow(dir.path(), &args),
        "check examples",
        COMMAND_DEADLINE,
    );
    out.assert_success("replyflow check examples/*.bpmn");
    for file in &files {
        let prefix = format!("{}: ok", file.display());
        assert!(
            out.stdout.lines().any(|line| line.starts_with(&prefix)),
            "no `{prefix}` line: {}",
            out.describe()
        );
    }
}

const BPMN_HEADER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1"
             id="defs" targetNamespace="https://example.com">"#;

/// start → task → end plus `extra`, in a process with id `id`.
fn small_process(id: &str, extra: &str) -> String {
    format!(
        r#"{BPMN_HEADER}
  <process id="{id}" isExecutable="true">
    <startEvent id="start"/>
    <sequenceFlow id="f1" sourceRef="start" targetRef="task"/>
    <userTask id="task" replyflow:assignee="alice"/>
    <sequenceFlow id="f2" sourceRef="task" targetRef="end"/>
    <endEvent id="end"/>
    {extra}
  </process>
</definitions>
"#
    )
}

#[test]
fn check_names_the_element_and_the_reason_of_every_error_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.bpmn");
    let unknown = dir.path().join("unknown_element.bpmn");
    let dangling = dir.path().join("dangling_flow.bpmn");
    std::fs::write(&good, small_process("good", "")).expect("write");
    std::fs::write(
        &unknown,
        small_process("unknown", r#"<scriptTask id="run_script"/>"#),
    )
    .expect("write");
    std::fs::write(
        &dangling,
        small_process(
            "dangling",
            r#"<sequenceFlow id="to_ghost" sourceRef="task" targetRef="ghost"/>"#,
        ),
    )
    .expect("write");

    let out = run(
        replyflow(
            dir.path(),
            &[
                "check",
                path_str(&good),
                path_str(&unknown),
                path_str(&dangling),
            ],
        ),
        "check bad files",
        COMMAND_DEADLINE,
    );
    out.assert_failure("replyflow check with bad files");
    let line_of = |file: &Path, element: &str| -> String {
        let prefix = format!("{}: {element}: ", file.display());
        out.stdout
            .lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}<reason>` line: {}", out.describe()))
            .to_string()
    };
    assert!(
        out.stdout
            .lines()
            .any(|line| line.starts_with(&format!("{}: ok", good.display()))),
        "the good file is still reported ok: {}",
        out.describe()
    );
    let line = line_of(&unknown, "run_script");
    assert!(line.contains("unsupported element scriptTask"), "{line}");
    let line = line_of(&dangling, "to_ghost");
    assert!(
        line.contains("targetRef") && line.contains("ghost"),
        "{line}"
    );
}

#[test]
fn check_reports_a_missing_file_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no_such_file.bpmn");
    let expense = repo_path("examples/expense.bpmn");
    let out = run(
        replyflow(
            dir.path(),
            &["check", path_str(&expense), path_str(&missing)],
        ),
        "check a missing file",
        COMMAND_DEADLINE,
    );
    out.assert_failure("replyflow check on a missing file");
    assert!(
        out.stdout.contains(&format!("{}: ok", expense.display())),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout
            .lines()
            .any(|line| line.starts_with(&format!("{}: cannot read", missing.display()))),
        "the missing file is named: {}",
        out.describe()
    );
}

// ------------------------------------------------------------------------------------- serve

/// The first column of each `ctl tasks` line (the task id), with the line.
fn task_lines(out: &Finished) -> Vec<(String, String)> {
    out.stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let id = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            (id, line.to_string())
        })
        .collect()
}

#[test]
fn the_readme_walkthrough_runs_through_ctl_and_sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("x.db");
    let db_url = sqlite_url(&db);
    let server = ServerProcess::start(
        replyflow(
            dir.path(),
            &["serve", "--listen", "127.0.0.1:0", "--database", &db_url],
        ),
        SERVER_DEADLINE,
    );
    assert!(server.addr.ip().is_loopback() && server.addr.port() != 0);
    let d = dir.path();

    let out = server.ctl(d, &["users", "add", "mary", "--email", "mary@example.com"]);
    out.assert_success("ctl users add mary");
    assert!(out.stdout.contains("mary"), "{}", out.describe());
    server
        .ctl(d, &["users", "add", "fred", "--email", "fred@example.com"])
        .assert_success("ctl users add fred");
    let users = server.ctl(d, &["users", "list"]);
    users.assert_success("ctl users list");
    assert!(
        users.stdout.contains("mary@example.com") && users.stdout.contains("fred@example.com"),
        "{}",
        users.describe()
    );

    let expense = repo_path("examples/expense.bpmn");
    let out = server.ctl(d, &["deploy", path_str(&expense)]);
    out.assert_success("ctl deploy");
    assert!(
        out.stdout.contains("deployed expense version 1"),
        "{}",
        out.describe()
    );

    let out = server.ctl(
        d,
        &[
            "start",
            "expense",
            "--var",
            "manager=mary",
            "--var",
            "finance=fred",
            "--var",
            "amount=20000",
        ],
    );
    out.assert_success("ctl start");
    assert!(
        out.stdout.contains("expense v1 running"),
        "{}",
        out.describe()
    );

    let out = server.ctl(d, &["tasks", "--assignee", "mary"]);
    out.assert_success("ctl tasks --assignee mary");
    let tasks = task_lines(&out);
    assert_eq!(tasks.len(), 1, "one task for mary: {}", out.describe());
    let (manager_task, line) = &tasks[0];
    assert!(line.contains("manager_approval"), "{line}");

    let out = server.ctl(
        d,
        &[
            "--as",
            "mary",
            "complete",
            manager_task,
            "approve",
            "--comment",
            "ok",
        ],
    );
    out.assert_success("ctl --as mary complete");
    assert!(
        out.stdout.contains("outcome=approve by=mary"),
        "{}",
        out.describe()
    );

    let out = server.ctl(d, &["tasks", "--assignee", "fred"]);
    out.assert_success("ctl tasks --assignee fred");
    let tasks = task_lines(&out);
    assert_eq!(tasks.len(), 1, "one task for fred: {}", out.describe());
    let (finance_task, line) = &tasks[0];
    assert!(line.contains("finance_approval"), "{line}");
    assert!(
        task_lines(&server.ctl(d, &["tasks", "--assignee", "mary"])).is_empty(),
        "mary has nothing left to do"
    );

    // Not fred's colleague's to decide: the error reaches the shell as a non-zero exit.
    let out = server.ctl(d, &["--as", "mary", "complete", finance_task, "approve"]);
    out.assert_failure("completing someone else's task");
    assert!(!out.stderr.trim().is_empty(), "{}", out.describe());

    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM must stop the server gracefully with exit status 0, got {status}"
    );
    assert!(db.is_file(), "the SQLite file {} exists", db.display());
}

#[test]
fn serve_is_the_default_and_reads_replyflow_server_listen_and_database_url() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("env.db");
    let mut command = replyflow(dir.path(), &[]);
    command
        .env("REPLYFLOW_SERVER_LISTEN", "127.0.0.1:0")
        .env("REPLYFLOW_DATABASE_URL", sqlite_url(&db));
    let server = ServerProcess::start(command, SERVER_DEADLINE);
    assert!(server.addr.ip().is_loopback() && server.addr.port() != 0);
    server
        .ctl(
            dir.path(),
            &["users", "add", "mary", "--email", "mary@example.com"],
        )
        .assert_success("ctl users add against the env-configured server");
    assert!(
        db.is_file(),
        "REPLYFLOW_DATABASE_URL names {}",
        db.display()
    );
    assert!(
        !dir.path().join("replyflow.db").exists(),
        "the default database file must not be used"
    );
    let status = server.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

/// A supervisor (systemd, Kubernetes, a test harness) may send SIGTERM the moment the server says
/// it is listening; that must already be a graceful stop with exit status 0, not death by the
/// signal's default action. The signal is sent by a shell that is already running, so that it
/// arrives within a millisecond of the log line.
#[test]
fn sigterm_right_after_the_listening_line_is_already_graceful() {
    use std::io::{BufRead, BufReader, Write};
    for round in 0..25 {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_url = sqlite_url(&dir.path().join("early.db"));
        let mut server = replyflow(
            dir.path(),
            &["serve", "--listen", "127.0.0.1:0", "--database", &db_url],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the server");
        let mut killer = Command::new("sh")
            .args([
                "-c",
                "read _ && kill -TERM \"$0\"",
                &server.id().to_string(),
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("starting sh");
        let mut log = String::new();
        for line in BufReader::new(server.stdout.take().expect("stdout")).lines() {
            let line = line.expect("log line");
            log.push_str(&line);
            log.push('\n');
            if line.contains("replyflow listening") {
                let _ = killer.stdin.take().expect("sh stdin").write_all(b"go\n");
                break;
            }
        }
        let _ = killer.wait();
        let mut server = KillOnDrop(server);
        let status = server.wait_within(
            SERVER_DEADLINE,
            &format!("round {round}: no exit after SIGTERM; log:\n{log}"),
        );
        assert!(
            status.success(),
            "round {round}: SIGTERM right after the listening line gave {status}, not a graceful exit 0; log:\n{log}"
        );
    }
}

/// Graceful shutdown must not wait forever for clients: an open WatchTasks stream is ended
/// (UNAVAILABLE, as task.proto documents) and the process exits 0, on SIGINT as on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_ends_open_watch_streams_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = sqlite_url(&dir.path().join("watch.db"));
    let cwd = dir.path().to_path_buf();
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::start(
            replyflow(
                &cwd,
                &["serve", "--listen", "127.0.0.1:0", "--database", &db_url],
            ),
            SERVER_DEADLINE,
        )
    })
    .await
    .expect("server start");
    let channel = tonic::transport::Channel::from_shared(server.url())
        .expect("uri")
        .connect()
        .await
        .expect("connecting to the server process");
    let mut stream = pb::task_service_client::TaskServiceClient::new(channel)
        .watch_tasks(req(
            pb::WatchTasksRequest {
                assignee: "mary".into(),
                include_open: true,
                ..Default::default()
            },
            "mary",
        ))
        .await
        .expect("WatchTasks opens")
        .into_inner();

    let status = tokio::task::spawn_blocking(move || server.stop_with("INT"))
        .await
        .expect("stop thread");
    assert!(
        status.success(),
        "SIGINT with an open stream: exit status {status}"
    );
    let end = tokio::time::timeout(SERVER_DEADLINE, stream.message())
        .await
        .expect("the stream ends once the server is gone");
    match end {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        Ok(other) => panic!("expected UNAVAILABLE at shutdown, got {other:?}"),
    }
}

#[test]
fn a_config_file_is_honoured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("from_file.db");
    let config = dir.path().join("replyflow.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[database]\nurl = \"{}\"\n",
            sqlite_url(&db)
        ),
    )
    .expect("write config");
    let server = ServerProcess::start(
        replyflow(dir.path(), &["--config", path_str(&config), "serve"]),
        SERVER_DEADLINE,
    );
    assert!(server.addr.ip().is_loopback() && server.addr.port() != 0);
    server
        .ctl(dir.path(), &["users", "list"])
        .assert_success("ctl users list against the file-configured server");
    assert!(db.is_file(), "database.url from the file: {}", db.display());
    let status = server.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

#[test]
fn an_unknown_key_in_the_config_file_stops_serve_and_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text, key) in [
        (
            "misspelt.toml",
            "[server]\nlisten = \"127.0.0.1:0\"\nlisen = \"127.0.0.1:0\"\n",
            "lisen",
        ),
        (
            "section.toml",
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[databse]\nurl = \"sqlite://x.db\"\n",
            "databse",
        ),
    ] {
        let config = dir.path().join(name);
        std::fs::write(&config, text).expect("write config");
        let out = run(
            replyflow(dir.path(), &["serve", "--config", path_str(&config)]),
            &format!("serve with {name}"),
            SERVER_DEADLINE,
        );
        out.assert_failure(&format!("serve with an unknown key in {name}"));
        assert!(
            out.stderr.contains(key),
            "the error names `{key}`: {}",
            out.describe()
        );
        assert!(
            !out.stdout.contains("replyflow listening")
                && !out.stderr.contains("replyflow listening"),
            "{}",
            out.describe()
        );
    }
}

// ----------------------------------------------------------------------------------- migrate

#[test]
fn migrate_creates_an_sqlite_file_and_can_run_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("m.db");
    let url = sqlite_url(&db);
    for round in ["first", "second"] {
        let out = run(
            replyflow(dir.path(), &["migrate", "--database", &url]),
            "migrate",
            COMMAND_DEADLINE,
        );
        out.assert_success(&format!("replyflow migrate ({round} run)"));
        assert!(
            out.stdout.contains("database is up to date"),
            "{}",
            out.describe()
        );
    }
    assert!(db.is_file(), "{} created", db.display());
}

/// On the backend under test (a fresh PostgreSQL database when TEST_DATABASE=postgres).
#[tokio::test]
async fn migrate_prepares_the_database_of_the_backend_under_test() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = db.url.clone();
    let cwd = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        run(
            replyflow(&cwd, &["migrate", "--database", &url]),
            "migrate",
            COMMAND_DEADLINE,
        )
    })
    .await
    .expect("migrate thread");
    out.assert_success("replyflow migrate on the backend under test");

    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .expect("connecting to the migrated database");
    for table in ["definitions", "instances", "tasks", "users", "events"] {
        let count: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|err| panic!("table {table} after migrate: {err}"));
        assert_eq!(count, 0, "{table} starts empty");
    }
    let _ = sqlx::Connection::close(conn).await;
    db.drop_database().await;
}

// ------------------------------------------------------------------------------------ python

/// The interpreter for the cross-language test: $REPLYFLOW_PYTHON (scripts/test sets it to its
/// venv), else a `python3` that has grpcio and grpcio-tools. Never a silent skip.
fn python() -> String {
    if let Ok(python) = std::env::var("REPLYFLOW_PYTHON")
        && !python.trim().is_empty()
    {
        return python;
    }
    let usable = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        usable,
        "the Python client test needs a python with grpcio and grpcio-tools: REPLYFLOW_PYTHON is \
         unset and `python3 -c 'import grpc, grpc_tools'` fails. Run the tests through \
         ./scripts/test (it creates the venv target/pyenv and exports REPLYFLOW_PYTHON), e.g. \
         `./scripts/test -- cargo test --test api python`, or set REPLYFLOW_PYTHON=target/pyenv/bin/python"
    );
    "python3".into()
}

#[tokio::test]
async fn a_python_grpcio_client_with_stubs_generated_from_the_protos_drives_the_server() {
    let app = spawn_app().await;
    let python = python();
    let addr = app.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(&python);
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args([
                "tests/python/client_test.py",
                "--addr",
                &addr,
                "--bpmn",
                "examples/expense.bpmn",
            ]);
        run(
            command,
            "tests/python/client_test.py",
            Duration::from_secs(180),
        )
    })
    .await
    .expect("python thread");
    println!("{}", out.stdout);
    out.assert_success("tests/python/client_test.py");
    assert!(out.stdout.contains("checks passed"), "{}", out.describe());
    app.stop().await;
}

/// DESIGN §10: a committed task has its mail in the outbox, and a crash loses nothing. The server
/// is killed (SIGKILL) while the approval mail waits for an SMTP server that is down; restarted
/// with a working transport, it delivers that mail, once.
#[test]
fn a_mail_queued_when_the_server_is_killed_is_delivered_once_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let db_url = sqlite_url(&d.join("crash.db"));
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut command = replyflow(
        d,
        &["serve", "--listen", "127.0.0.1:0", "--database", &db_url],
    );
    command.env(
        "REPLYFLOW_MAIL_OUTBOUND",
        format!("smtp://127.0.0.1:{closed_port}"),
    );
    let server = ServerProcess::start(command, SERVER_DEADLINE);
    server
        .ctl(d, &["users", "add", "mary", "--email", "mary@example.com"])
        .assert_success("ctl users add mary");
    server
        .ctl(
            d,
            &["deploy", path_str(&repo_path("examples/expense.bpmn"))],
        )
        .assert_success("ctl deploy");
    server
        .ctl(
            d,
            &[
                "start",
                "expense",
                "--var",
                "manager=mary",
                "--var",
                "amount=20000",
            ],
        )
        .assert_success("ctl start");
    // Killed once the failed attempt is recorded (the mail waits for its retry), not merely
    // logged: a kill between the attempt and its record leaves the row claimed until its lease
    // ends, which is issue 14's case, not this one.
    eventually_blocking(SERVER_DEADLINE, || {
        if outbox_has_status(&db_url, "temp_failed") {
            Ok(())
        } else {
            Err(format!(
                "the first delivery attempt never failed; log:\n{}",
                server.log()
            ))
        }
    });
    let status = server.stop_with("KILL");
    assert!(!status.success(), "SIGKILL ends the process: {status}");

    let outbox = d.join("outbox");
    let mut command = replyflow(
        d,
        &["serve", "--listen", "127.0.0.1:0", "--database", &db_url],
    );
    command.env(
        "REPLYFLOW_MAIL_OUTBOUND",
        format!("file:{}", outbox.display()),
    );
    let server = ServerProcess::start(command, SERVER_DEADLINE);
    let mails = || -> Vec<String> {
        std::fs::read_dir(&outbox)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .filter(|text| text.contains("mary@example.com"))
                    .collect()
            })
            .unwrap_or_default()
    };
    eventually_blocking(SERVER_DEADLINE, || {
        if mails().is_empty() {
            Err(format!(
                "the queued mail was not delivered after the restart; log:\n{}",
                server.log()
            ))
        } else {
            Ok(())
        }
    });
    // Counted once the server has stopped: no second delivery can come after that.
    assert!(server.terminate().success());
    assert_eq!(mails().len(), 1, "delivered exactly once");
    assert!(outbox_has_status(&db_url, "sent"));
}

#[test]
fn ctl_identifies_itself_with_an_api_key_and_acts_for_a_user() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("keys.db");
    // Only the key's SHA-256 is configured, never the key.
    let hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(b"ops-key-for-tests")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let keys = format!(r#"[{{"id":"ops","sha256":"{hash}","roles":["directory","act_as"]}}]"#);
    let mut command = replyflow(dir.path(), &["serve"]);
    command
        .env("REPLYFLOW_SERVER_LISTEN", "127.0.0.1:0")
        .env("REPLYFLOW_DATABASE_URL", sqlite_url(&db))
        .env("REPLYFLOW_SECURITY_ADMINS", "")
        .env("REPLYFLOW_SECURITY_API_KEYS", keys);
    let server = ServerProcess::start(command, SERVER_DEADLINE);
    let add = |key: &str, id: &str| {
        let email = format!("{id}@example.com");
        server.ctl(
            dir.path(),
            &["--api-key", key, "users", "add", id, "--email", &email],
        )
    };
    add("ops-key-for-tests", "mary").assert_success("the ops key adds a user (role directory)");
    add("a-guessed-key", "eve").assert_failure("an unknown key is refused");
    server
        .ctl(
            dir.path(),
            &[
                "--api-key",
                "ops-key-for-tests",
                "--act-as",
                "mary",
                "tasks",
                "--assignee",
                "mary",
            ],
        )
        .assert_success("ctl acting for mary lists her tasks");
    server.terminate();
}

/// Whether an outbox row of the SQLite database at `db_url` has `status` (read beside the
/// running server: WAL lets a reader in).
fn outbox_has_status(db_url: &str, status: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let Ok(store) = replyflow::store::Store::connect(db_url, &Default::default()).await else {
            return false;
        };
        let found: Option<i64> =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = $1")
                .bind(status)
                .fetch_one(store.pool())
                .await
                .ok();
        store.close().await;
        found.is_some_and(|n| n > 0)
    })
}
