//! Loading a set of embedded templates, each overridable by a file of the same name in
//! `mail.templates_dir`: the one loader of the mail templates, the answers and the reminder
//! texts. Each caller then renders its own samples, so that a broken override stops the start.
use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};
use minijinja::{Environment, UndefinedBehavior, syntax::SyntaxConfig};

/// Template name → the override file it came from (`None`: embedded).
#[derive(Clone)]
pub(crate) struct Origins(pub(crate) Vec<(&'static str, Option<PathBuf>)>);

impl Origins {
    pub(crate) fn of(&self, name: &str) -> Option<&Path> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, p)| p.as_deref())
    }
}

impl fmt::Debug for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, origin) in &self.0 {
            match origin {
                Some(path) => map.entry(name, &path.display()),
                None => map.entry(name, &"embedded"),
            };
        }
        map.finish()
    }
}

/// `name (path)` or `name (embedded)`, for errors.
pub(crate) fn describe(name: &str, origin: Option<&Path>) -> String {
    match origin {
        Some(path) => format!("{name} ({})", path.display()),
        None => format!("{name} (embedded)"),
    }
}

/// The templates `embedded`, each replaced by `dir/<name>` when that file exists, in one
/// environment (blocks trimmed). `what` names the set in errors ("mail template").
pub(crate) fn load(
    dir: Option<&Path>,
    embedded: &[(&'static str, &'static str)],
    what: &str,
    undefined: Option<UndefinedBehavior>,
) -> anyhow::Result<(Environment<'static>, Origins)> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .with_context(|| format!("{what} syntax configuration"))?,
    );
    if let Some(undefined) = undefined {
        env.set_undefined_behavior(undefined);
    }
    let mut origins = Vec::with_capacity(embedded.len());
    for &(name, source) in embedded {
        let path = dir.map(|d| d.join(name)).filter(|p| p.exists());
        let source = match &path {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("{what} {name}: cannot read {}", path.display()))?,
            None => source.to_string(),
        };
        env.add_template_owned(name, source)
            .map_err(|e| anyhow!("{what} {}: {e}", describe(name, path.as_deref())))?;
        origins.push((name, path));
    }
    Ok((env, Origins(origins)))
}
