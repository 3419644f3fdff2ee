//! `replyflow check FILE...`: validates definitions offline, printing each error with its
//! element id, so a modeller can fix a drawing before deploying it.
use std::{path::PathBuf, process::ExitCode};

use crate::engine::definition;

pub(super) fn run(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        let shown = file.display();
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(err) => {
                println!("{shown}: cannot read: {err}");
                failed = true;
                continue;
            }
        };
        match definition::parse(&bytes) {
            Ok(def) => {
                let tasks = def.user_tasks().count();
                println!(
                    "{shown}: ok: process {:?} ({}), {} elements, {tasks} user tasks",
                    def.key,
                    def.name,
                    def.nodes.len()
                );
            }
            Err(errors) => {
                failed = true;
                for error in &errors.0 {
                    println!("{shown}: {}: {}", error.element_id, error.reason);
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
