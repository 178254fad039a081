//! TEMPORARY stub, replaced by the full NodeSet module.
#[derive(Debug, Clone, Default)]
pub struct NodeSet(Vec<String>);
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NodeSetError(String);
impl NodeSet {
    pub fn parse(expr: &str) -> Result<NodeSet, NodeSetError> {
        let mut out = Vec::new();
        for part in expr.split(',') {
            if let Some((pre, rest)) = part.split_once('[') {
                let (range, post) = rest.split_once(']').ok_or_else(|| NodeSetError("unbalanced".into()))?;
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                let (x, y): (u64, u64) = (
                    a.parse().map_err(|_| NodeSetError("bad".into()))?,
                    b.parse().map_err(|_| NodeSetError("bad".into()))?,
                );
                for i in x..=y {
                    out.push(format!("{pre}{i:0w$}{post}", w = a.len()));
                }
            } else if !part.is_empty() {
                out.push(part.to_string());
            }
        }
        Ok(NodeSet(out))
    }
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> NodeSet {
        NodeSet(names.into_iter().map(String::from).collect())
    }
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().cloned()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn fold(&self) -> String {
        self.0.join(",")
    }
}
