//! SIGHUP: read the configuration again (file and environment, under the
//! same flags), apply the keys a running site can change, and say which
//! changed keys wait for a restart. An invalid configuration changes
//! nothing: the daemon keeps running with what it had, and the error names
//! the key.

use std::sync::Arc;

use kiln_actors::{Site, SiteConfig};

use crate::cli::ServeArgs;
use crate::config::{self, DaemonConfig, InForce, LIVE_KEYS};
use crate::logging::LogFilter;

/// What a reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Keys whose new value is in force.
    pub applied: Vec<String>,
    /// Keys changed in the configuration that only a restart applies.
    pub need_restart: Vec<String>,
}

/// Holds the configuration in force, to compare a new one with.
pub struct Reloader {
    args: ServeArgs,
    /// Each key's value in force (restart-only keys keep their start value).
    table: toml::Table,
    site: SiteConfig,
    log: LogFilter,
    /// What `kiln status` shows: `table`, once a reload applied it.
    in_force: Arc<InForce>,
}

impl Reloader {
    pub fn new(args: ServeArgs, started: &DaemonConfig, log: LogFilter, in_force: Arc<InForce>) -> Self {
        Reloader { args, table: started.table(), site: started.site.clone(), log, in_force }
    }

    /// Reads the configuration again and applies what changed.
    pub async fn reload(&mut self, site: &Site) -> anyhow::Result<Reloaded> {
        // Off the actors' thread: group sources run commands.
        let args = self.args.clone();
        let new = tokio::task::spawn_blocking(move || config::load(&args)).await??;
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        let table = new.table();
        let mut keys: Vec<&String> = self.table.keys().chain(table.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut done = Reloaded::default();
        let mut updates = Vec::new();
        let mut changes = Vec::new();
        for key in keys {
            let (old, now) = (self.table.get(key), table.get(key));
            if old == now {
                continue;
            }
            let show = |v: Option<&toml::Value>| v.map_or_else(|| "(unset)".to_string(), |v| v.to_string());
            if LIVE_KEYS.contains(&key.as_str()) {
                changes.push((key.clone(), show(old), show(now), new.source(key)));
                updates.push((key.clone(), now.cloned()));
                done.applied.push(key.clone());
            } else {
                tracing::warn!(
                    key = %key,
                    running = %show(old),
                    configured = %show(now),
                    "config key changed but needs a restart; running with the old value"
                );
                done.need_restart.push(key.clone());
            }
        }
        // A group source's groups change with no key changing.
        if new.site.groups != self.site.groups && !done.applied.iter().any(|k| k == "groups") {
            tracing::info!("node groups changed");
            done.applied.push("groups".into());
        }
        if done.applied.is_empty() {
            return Ok(done);
        }
        let site_cfg = SiteConfig {
            lock_wait: new.site.lock_wait,
            default_fanout: new.site.default_fanout,
            max_running_jobs: new.site.max_running_jobs,
            groups: new.site.groups.clone(),
            periodic: new.site.periodic.clone(),
            ..self.site.clone()
        };
        site.reconfigure(&site_cfg).await?;
        self.site = site_cfg;
        if done.applied.iter().any(|k| k == "log") {
            self.log.set(&new.log)?;
        }
        // Logged once applied, so a changed log filter already shows them.
        for (key, old, now, source) in changes {
            tracing::info!(key = %key, old = %old, new = %now, source = %source, "config key changed");
        }
        for (key, value) in updates {
            match value {
                Some(v) => self.table.insert(key, v),
                None => self.table.remove(&key),
            };
        }
        self.in_force.set(&self.table);
        Ok(done)
    }
}
