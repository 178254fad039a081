//! `kiln port`: a node's network ports (by MAC) and port groups (bonds).

use std::path::Path;

use kiln_actors::NewPortGroup;
use kiln_actors::protocol::{Request, Response};

use super::{Failure, call_once, print, unexpected};
use crate::cli::{PortCommand, PortGroupCommand};
use crate::output;

pub(super) async fn run(command: PortCommand, socket: &Path, json: bool) -> Result<(), Failure> {
    let request = match command {
        PortCommand::Create { mac, node } => Request::PortCreate { address: mac, node },
        PortCommand::List { node } => Request::PortList { node },
        PortCommand::Delete { mac } => Request::PortDelete { address: mac },
        PortCommand::Set { mac, group, no_group: _ } => Request::PortSet { address: mac, group },
        PortCommand::Group(g) => match g {
            PortGroupCommand::Create { name, node, mode, address, ports } => {
                Request::PortGroupCreate(NewPortGroup { name, node, mode: Some(mode), address, ports })
            }
            PortGroupCommand::List { node } => Request::PortGroupList { node },
            PortGroupCommand::Show { name } => Request::PortGroupShow { group: name },
            PortGroupCommand::Delete { name } => Request::PortGroupDelete { group: name },
        },
    };
    match call_once(socket, request).await? {
        Response::Port(p) => print(json, &p, |p| output::ports(std::slice::from_ref(p))),
        Response::Ports(ps) => print(json, &ps, |ps| output::ports(ps)),
        Response::PortGroup(g) => print(json, &g, |g| output::port_groups(std::slice::from_ref(g))),
        Response::PortGroups(gs) => print(json, &gs, |gs| output::port_groups(gs)),
        other => return Err(unexpected(other)),
    }
    Ok(())
}
