//! Shell completions and the man page come from the CLI's definition.

use std::process::Command;

use crate::harness::KILN;

fn run(args: &[&str]) -> String {
    let out = Command::new(KILN).args(args).output().expect("run kiln");
    assert!(out.status.success(), "kiln {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn completions_know_the_commands_for_every_shell() {
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("complete -F _kiln"), "{bash}");
    for word in ["node", "exec", "periodic", "completions", "--check-config", "--set", "boot-device"] {
        assert!(bash.contains(word), "bash completions lack {word}");
    }
    assert!(run(&["completions", "zsh"]).contains("#compdef kiln"));
    assert!(run(&["completions", "fish"]).contains("complete -c kiln"));
    for shell in ["elvish", "powershell"] {
        assert!(run(&["completions", shell]).contains("kiln"));
    }
    let out = Command::new(KILN).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
}

/// What bash completes `words` (the last one partial) to, with kiln's script.
fn bash_completes(words: &[&str]) -> Vec<String> {
    let list = words.join(" ");
    let (cword, cur, prev) = (words.len() - 1, words[words.len() - 1], words[words.len() - 2]);
    let script = format!(
        "source <('{KILN}' completions bash)\nCOMP_WORDS=({list}); COMP_CWORD={cword}\n_kiln kiln '{cur}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().expect("run bash");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_commands_and_subcommands() {
    assert_eq!(bash_completes(&["kiln", "no"]), ["node", "nodeset"]);
    assert_eq!(bash_completes(&["kiln", "node", "po"]), ["power"]);
    assert!(bash_completes(&["kiln", "serve", "--check"]).contains(&"--check-config".to_string()));
    // Options of subcommands, new ones included, complete from the same
    // definition the parser uses.
    assert_eq!(bash_completes(&["kiln", "events", "--si"]), ["--since"]);
    assert_eq!(bash_completes(&["kiln", "exec", "--json-l"]), ["--json-lines"]);
    assert_eq!(bash_completes(&["kiln", "rc"]), ["rcopy"]);
    assert_eq!(bash_completes(&["kiln", "node", "power", "so"]), ["soft-off"]);
}

#[test]
fn the_man_page_is_roff_with_every_command() {
    let man = run(&["manpage"]);
    assert!(man.starts_with(".ie") || man.contains(".TH kiln 1"), "{man}");
    assert!(man.contains(".TH kiln 1"), "{man}");
    for cmd in ["serve", "node", "exec", "nodeset", "completions"] {
        assert!(man.contains(cmd), "the man page lacks {cmd}");
    }
    let dir = tempfile::tempdir().unwrap();
    run(&["manpage", "--out-dir", dir.path().to_str().unwrap()]);
    for page in ["kiln.1", "kiln-serve.1", "kiln-node.1", "kiln-node-create.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
}
