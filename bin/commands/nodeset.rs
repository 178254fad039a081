//! `kiln nodeset`: node set arithmetic (ClusterShell's `nodeset`), done
//! locally; groups come from a config file's `[groups]`, not the daemon.

use kiln_actors::nodeset::NodeSet;

use super::Failure;
use crate::cli::NodesetArgs;
use crate::output;

pub(super) fn run(args: NodesetArgs, json: bool) -> Result<(), Failure> {
    let groups = match &args.config {
        Some(path) => crate::config::groups_of(path).map_err(Failure::Usage)?,
        None => Default::default(),
    };
    let parse = |expr: &str| {
        NodeSet::parse_with(expr, &|g| groups.get(g).cloned())
            .map_err(|e| Failure::Usage(anyhow::anyhow!("node set '{expr}': {e}")))
    };
    let mut set = NodeSet::new();
    for expr in &args.sets {
        set = set.union(&parse(expr)?);
    }
    for expr in &args.intersection {
        set = set.intersection(&parse(expr)?);
    }
    for expr in &args.exclude {
        set = set.difference(&parse(expr)?);
    }
    // Every group as a node set, for -l and -r.
    let named = || -> Result<Vec<(String, NodeSet)>, Failure> {
        groups.keys().map(|name| Ok((name.clone(), parse(&format!("@{name}"))?))).collect()
    };
    if args.list > 0 {
        let filtered = !args.sets.is_empty() || !args.intersection.is_empty() || !args.exclude.is_empty();
        let rows: Vec<(String, NodeSet)> = named()?
            .into_iter()
            .map(|(name, nodes)| if filtered { (name, nodes.intersection(&set)) } else { (name, nodes) })
            .filter(|(_, nodes)| !filtered || !nodes.is_empty())
            .collect();
        if json {
            let doc: Vec<serde_json::Value> = rows
                .iter()
                .map(|(name, nodes)| serde_json::json!({ "group": name, "nodes": nodes.fold(), "count": nodes.len() }))
                .collect();
            output::json(&doc);
        }
        for (name, nodes) in rows.iter().filter(|_| !json) {
            match args.list {
                1 => println!("@{name}"),
                2 => println!("@{name} {}", nodes.fold()),
                _ => println!("@{name} {} {}", nodes.fold(), nodes.len()),
            }
        }
    } else if args.regroup {
        let text = set.regroup(&named()?);
        if json { output::json(&text) } else { println!("{text}") }
    } else if args.expand {
        let names: Vec<String> = set.iter().collect();
        let separator = args.separator.as_deref().map(unescape).unwrap_or_else(|| " ".into());
        if json { output::json(&names) } else { println!("{}", names.join(&separator)) }
    } else if args.fold {
        if json { output::json(&set.fold()) } else { println!("{}", set.fold()) }
    } else if json {
        output::json(&set.len())
    } else {
        println!("{}", set.len())
    }
    Ok(())
}

/// `\n`, `\t` and `\\` in a separator, as ClusterShell's `nodeset -S` reads them.
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            other => {
                out.push('\\');
                out.extend(other);
            }
        }
    }
    out
}
