//! `kiln job`: submit job files, list, show, watch, cancel, reprioritize
//! and archive jobs. The bulk node verbs submit jobs too, and print them
//! through [`submitted`].

use std::path::Path;

use kiln_actors::KilnError;
use kiln_actors::jobs::{JobView, NodeResult, Opcode};
use kiln_actors::protocol::{Request, Response};
use kiln_store::{JobId, JobStatus};

use super::wait::{Bar, LogOut, follow_job};
use super::{Failure, call, call_once, connect, print, unexpected, usage};
use crate::cli::JobCommand;
use crate::connection::Connection;
use crate::output;

pub(super) async fn run(command: JobCommand, socket: &Path, json: bool) -> Result<(), Failure> {
    match command {
        JobCommand::List { ids, output, status, limit } => {
            if !ids.is_empty() && status.is_some() {
                return Err(usage("give job ids or --status, not both (ids list those jobs whatever their status)"));
            }
            let list = List {
                status: status.map(|s| s.parse::<JobStatus>()).transpose().map_err(|e| Failure::Usage(e.into()))?,
                limit: (limit > 0).then_some(limit),
                ids: ids.into_iter().map(JobId).collect(),
                fields: output.as_deref().map(output::job_fields).transpose().map_err(Failure::Usage)?,
            };
            list.run(socket, json).await
        }
        JobCommand::Show { id } => {
            match call_once(socket, Request::JobShow { id: JobId(id) }).await? {
                Response::Job(job) if json => output::json(&output::job_value(&job)),
                Response::Job(job) => output::job(&job),
                other => return Err(unexpected(other)),
            }
            Ok(())
        }
        JobCommand::Watch { id } => {
            let log = if json { LogOut::JsonLines } else { LogOut::Text };
            let job = follow_job(&mut connect(socket).await?, socket, JobId(id), log, None).await?;
            if json {
                // The last line of the stream: the job as it ended.
                output::json_line(&output::job_value(&job));
            }
            job_exit(&job)
        }
        JobCommand::Cancel { id } => match call_once(socket, Request::JobCancel { id: JobId(id) }).await? {
            Response::JobCanceled(status) => {
                if json {
                    output::json(&serde_json::json!({ "status": status }))
                } else {
                    println!("{status}")
                }
                Ok(())
            }
            other => Err(unexpected(other)),
        },
        JobCommand::Priority { id, priority } => {
            if !(-20..=19).contains(&priority) {
                return Err(usage(format_args!("priority {priority} is out of range -20..19")));
            }
            let id = JobId(id);
            match call_once(socket, Request::JobPriority { id, priority }).await? {
                Response::Job(job) if json => output::json(&output::job_value(&job)),
                Response::Job(job) => println!("job {id} {}: priority {}", job.status, job.priority),
                other => return Err(unexpected(other)),
            }
            Ok(())
        }
        JobCommand::Archive { id } => {
            let id = JobId(id);
            match call_once(socket, Request::JobArchive { id }).await? {
                Response::Done if json => output::json(&serde_json::json!({ "ok": true })),
                Response::Done => println!("job {id} archived"),
                other => return Err(unexpected(other)),
            }
            Ok(())
        }
        JobCommand::Autoarchive { age } => {
            let older_than = match age.trim() {
                "all" => std::time::Duration::ZERO,
                text => {
                    crate::layered::Seconds::parse(text)
                        .map_err(|e| usage(format_args!("{e}; or `all` for every ended job")))?
                        .0
                }
            };
            match call_once(socket, Request::JobAutoArchive { older_than }).await? {
                Response::JobsArchived(n) if json => output::json(&serde_json::json!({ "archived": n })),
                Response::JobsArchived(n) => println!("{n} job{} archived", if n == 1 { "" } else { "s" }),
                other => return Err(unexpected(other)),
            }
            Ok(())
        }
        JobCommand::Submit { file, wait } => match crate::jobfile::read(&file).map_err(Failure::Usage)? {
            crate::jobfile::Submission::One { ops, priority, depends } => {
                let request = Request::JobSubmit { ops, priority, depends };
                submitted(&mut connect(socket).await?, socket, request, wait, false, json).await
            }
            crate::jobfile::Submission::Many(jobs) => {
                let request = Request::JobSubmitMany { jobs };
                submitted_many(&mut connect(socket).await?, socket, request, wait, json).await
            }
        },
    }
}

/// `kiln job list`.
struct List {
    status: Option<JobStatus>,
    limit: Option<u32>,
    ids: Vec<JobId>,
    fields: Option<Vec<output::JobField>>,
}

impl List {
    /// With a `limit`, asks for one more job to tell whether there are
    /// more, and says so. With `ids`, those jobs.
    async fn run(self, socket: &Path, json: bool) -> Result<(), Failure> {
        let List { status, limit, ids, fields } = self;
        let by_id = !ids.is_empty();
        let request = Request::JobList { status, limit: limit.map(|n| n.saturating_add(1)), ids };
        let mut jobs = match call_once(socket, request).await? {
            Response::Jobs(jobs) => jobs,
            other => return Err(unexpected(other)),
        };
        if let Some(limit) = limit.filter(|l| !by_id && jobs.len() > *l as usize) {
            // Oldest first: the one past the limit is the first.
            jobs.drain(..jobs.len() - limit as usize);
            eprintln!(
                "kiln: the newest {limit} live jobs are listed, and there are more \
                 (--limit N lists more, --limit 0 every one)"
            );
        }
        if json {
            output::json(&output::jobs_value(&jobs, fields.as_deref()));
        } else {
            output::jobs(&jobs, fields.as_deref().unwrap_or(output::DEFAULT_JOB_FIELDS));
        }
        Ok(())
    }
}

/// Submits one job; with `wait`, follows it to its end and prints it
/// (per-node results for a bulk verb), else says how to follow it.
pub(super) async fn submitted(
    conn: &mut Connection,
    socket: &Path,
    request: Request,
    wait: bool,
    bulk: bool,
    json: bool,
) -> Result<(), Failure> {
    let bar = (!json).then(|| Bar { nodes: bar_nodes(&request) });
    let id = match call(conn, request).await? {
        Response::JobSubmitted(id) => id,
        other => return Err(unexpected(other)),
    };
    if !wait {
        if json {
            output::json(&serde_json::json!({ "job": id }));
        } else {
            println!("job {id} submitted; follow it with `kiln job watch {id}`");
        }
        return Ok(());
    }
    let job = follow_job(conn, socket, id, LogOut::None, bar).await?;
    if bulk {
        let results: Vec<NodeResult> = job.ops.iter().flat_map(|o| o.results.clone()).collect();
        print_results(&results, json);
        if let (Some(e), true) = (&job.error, results.is_empty()) {
            return Err(Failure::Refused(KilnError::InvalidInput(format!("job {id}: {e}"))));
        }
    } else if json {
        output::json(&output::job_value(&job));
    } else {
        output::job(&job);
    }
    job_exit(&job)
}

/// The nodes a submitted job works on, for its progress bar: the bulk
/// verb's node set, or a job file's node-set opcodes' together.
fn bar_nodes(request: &Request) -> Option<String> {
    match request {
        Request::NodeOp { nodes, .. } => Some(nodes.clone()),
        Request::JobSubmit { ops, .. } => {
            let sets: Vec<&str> = ops
                .iter()
                .filter_map(|op| match op {
                    Opcode::Node { nodes, .. } => Some(nodes.as_str()),
                    _ => None,
                })
                .collect();
            (!sets.is_empty()).then(|| sets.join(","))
        }
        _ => None,
    }
}

/// Submits several jobs at once; with `wait`, follows each to its end.
async fn submitted_many(
    conn: &mut Connection,
    socket: &Path,
    request: Request,
    wait: bool,
    json: bool,
) -> Result<(), Failure> {
    let ids = match call(conn, request).await? {
        Response::JobsSubmitted(ids) => ids,
        other => return Err(unexpected(other)),
    };
    if !wait {
        if json {
            output::json(&serde_json::json!({ "jobs": ids }));
        } else {
            let list: Vec<String> = ids.iter().map(JobId::to_string).collect();
            println!("jobs {} submitted; follow one with `kiln job watch ID`", list.join(", "));
        }
        return Ok(());
    }
    let mut ended = Vec::with_capacity(ids.len());
    for id in ids {
        ended.push(follow_job(conn, socket, id, LogOut::None, None).await?);
    }
    if json {
        output::json(&ended.iter().map(output::job_value).collect::<Vec<_>>());
    } else {
        for (i, job) in ended.iter().enumerate() {
            if i > 0 {
                println!();
            }
            output::job(job);
        }
    }
    match ended.iter().all(|j| j.status == JobStatus::Success) {
        true => Ok(()),
        false => Err(Failure::Partial),
    }
}

/// The exit status of a followed job: success only when the job succeeded.
fn job_exit(job: &JobView) -> Result<(), Failure> {
    if job.status == JobStatus::Success { Ok(()) } else { Err(Failure::Partial) }
}

/// Per-node results: one JSON object per node (the result as it
/// serialises), or a table.
pub(super) fn print_results(results: &[NodeResult], json: bool) {
    print(json, results, output::results)
}
