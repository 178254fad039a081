//! The node import file `kiln node import FILE` reads: a JSON or YAML list of
//! `{name, driver, driver_info, properties, ports}`.
//!
//! Parsing is a pure function of the file's text, apart from reading the
//! file, so that the fuzz target `import_file` (fuzz/) and the corpus replay
//! test drive exactly what the CLI runs. Validation of the nodes themselves
//! (names, drivers, driver_info, MACs, duplicates) is the daemon's, in
//! [`kiln_actors::supervisor::prepare_nodes`], which the fuzz target runs too.

use kiln_actors::NewNode;

/// Why a node import file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not a JSON list of nodes: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a YAML list of nodes: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("lists no nodes")]
    Empty,
}

/// Parses the text of an import file: JSON when it starts with `[` or `{`,
/// YAML otherwise. Unknown keys are refused; an empty list is refused.
pub fn parse_node_list(text: &str) -> Result<Vec<NewNode>, ImportError> {
    let start = text.trim_start();
    let nodes: Vec<NewNode> = if start.starts_with('[') || start.starts_with('{') {
        serde_json::from_str(text)?
    } else {
        serde_yaml::from_str(text)?
    };
    if nodes.is_empty() {
        return Err(ImportError::Empty);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_lists_parse_alike() {
        let json = r#"[{"name": "n1", "driver": "fake", "ports": ["52:54:00:00:00:01"]}]"#;
        let yaml = "- name: n1\n  driver: fake\n  ports: ['52:54:00:00:00:01']\n";
        let (a, b) = (parse_node_list(json).unwrap(), parse_node_list(yaml).unwrap());
        assert_eq!(a, b);
        assert_eq!(a[0].ports, ["52:54:00:00:00:01"]);
    }

    #[test]
    fn empty_unknown_keys_and_non_lists_are_refused() {
        for (text, needle) in [
            ("[]", "no nodes"),
            ("", "no nodes"),
            ("{\"name\": \"n1\"}", "JSON"),
            ("[{\"name\": \"n1\", \"driver\": \"fake\", \"colour\": \"red\"}]", "colour"),
            ("- name: n1\n  driver: fake\n  colour: red\n", "colour"),
            ("- 17\n", "YAML"),
        ] {
            let e = parse_node_list(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
