//! Security rules as the server holds them: loads `*.rules` files from the
//! rules folder into compiled `nimbus_rules_lang::Rules` and hands out the
//! current set. Deciding a request is `documents`' job (it knows the data);
//! this module owns loading and the current version.

use std::path::Path;
use std::sync::{Arc, RwLock};

use nimbus_rules_lang::Rules;

/// The rules in force; cheap to clone, swapped atomically on reload.
#[derive(Clone)]
pub struct RulesService {
    current: Arc<RwLock<Arc<Rules>>>,
}

/// Reads and compiles every `*.rules` file in `dir` (sorted by name). A missing
/// folder means no rules: everything but the service key is denied.
pub fn load_dir(dir: &Path) -> Result<Rules, String> {
    let mut files = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
                if path.extension().is_some_and(|e| e == "rules") {
                    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    files.push((path.display().to_string(), text));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    files.sort();
    let sources: Vec<(&str, &str)> = files.iter().map(|(name, text)| (name.as_str(), text.as_str())).collect();
    Rules::compile(&sources).map_err(|e| e.to_string())
}

impl RulesService {
    pub fn new(rules: Rules) -> RulesService {
        RulesService { current: Arc::new(RwLock::new(Arc::new(rules))) }
    }

    pub fn current(&self) -> Arc<Rules> {
        self.current.read().map(|r| r.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}
