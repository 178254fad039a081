//! `kiln store`: work on the daemon's database file itself, without the
//! daemon: a backup copies a consistent snapshot while the daemon runs.

use std::path::Path;

use super::Failure;
use crate::cli::ServeArgs;
use crate::output;

/// `kiln store backup`: the data dir resolved as the daemon resolves it.
pub(super) fn backup(args: ServeArgs, dest: &Path, json: bool) -> Result<(), Failure> {
    let cfg = crate::config::load(&args).map_err(Failure::Usage)?;
    let src = cfg.site.database_path();
    let info = kiln_store::backup_sqlite(&src, dest).map_err(|e| Failure::Other(anyhow::Error::new(e)))?;
    if json {
        output::json(&serde_json::json!({
            "source": src.display().to_string(),
            "backup": dest.display().to_string(),
            "schema_version": info.schema_version,
            "nodes": info.nodes,
            "jobs": info.jobs,
            "bytes": info.bytes,
        }));
    } else {
        println!(
            "backed up {} to {}: {} nodes, {} jobs, schema version {}, {} bytes, integrity ok",
            src.display(),
            dest.display(),
            info.nodes,
            info.jobs,
            info.schema_version,
            info.bytes
        );
    }
    Ok(())
}
