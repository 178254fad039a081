//! The PostgreSQL schema, versioned as SQLite's is: entry `i` of
//! [`MIGRATIONS`] takes a database from version `i` to `i + 1`, entries are
//! only appended, and `kiln_schema.version` says how many ran.
//!
//! Why it is shaped so:
//!
//! - **The same columns as SQLite, in the same text forms** (timestamps as
//!   RFC 3339 text with nine digits, enums as their `as_str`, maps and job
//!   logs as JSON text): one set of encoders for both backends, and an exact
//!   round trip of every record (PostgreSQL's `timestamptz` keeps only
//!   microseconds).
//! - **Node rows carry their owner** (`owner`, `owner_epoch`): every write of
//!   a node or its history names the owner and epoch it believes in, and a
//!   row that says otherwise refuses it (spec section 13, fencing).
//! - **Checks that SQLite's backend makes from a changed-rows count are made
//!   in the statement**, by the `kiln_*` functions below raising an error
//!   with a kiln SQLSTATE (class `KL`): a group commit is sent as one
//!   pipeline, so a failed check must abort the transaction by itself, and
//!   the backend reads which check from the code. The codes:
//!   `KLNF0` not found, `KLFN0` fenced, `KLAR0` an archived job id,
//!   `KLUF0` a job not finished (the message is its status), `KLPG0` a port
//!   in another node's group.
//! - **Job rows carry their runner** (`runner`, from version 4): the member
//!   that runs the job. Every change of a live job is conditional on it, so
//!   a member whose jobs were adopted by another after it was declared dead
//!   is refused (`KLFN0`) rather than overwriting the adopter's progress.
//!   Job ids need no epoch: a job's runner changes only from a member that
//!   is not alive, and a member id is never reused.
//! - **One event stream for the site** (from version 10): an event's serial
//!   is given by the database (`kiln_append_event`, under an advisory lock
//!   held to the commit), so serials are site-wide and in commit order;
//!   see [`super::events`].
//! - Migration and its version are one transaction under an advisory lock,
//!   so two members starting together migrate once.

/// The schema, one entry per version.
pub const MIGRATIONS: &[&str] = &[
    // 1: everything SQLite's migrations 1-5 built, plus node ownership.
    r#"
    CREATE TABLE nodes (
        uuid                   text PRIMARY KEY,
        name                   text NOT NULL UNIQUE,
        driver                 text NOT NULL,
        driver_info            text NOT NULL,
        properties             text NOT NULL,
        provision_state        text NOT NULL,
        target_provision_state text,
        power_state            text,
        target_power_state     text,
        boot_device            text,
        maintenance            boolean NOT NULL,
        maintenance_reason     text,
        fault                  text,
        last_error             text,
        reservation_purpose    text,
        reservation_since      text,
        created_at             text NOT NULL,
        updated_at             text NOT NULL,
        owner                  text NOT NULL,
        owner_epoch            bigint NOT NULL
    );

    CREATE TABLE portgroups (
        uuid       text PRIMARY KEY,
        name       text NOT NULL UNIQUE,
        node       text NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
        address    text UNIQUE,
        mode       text NOT NULL,
        created_at text NOT NULL
    );
    CREATE INDEX portgroups_node ON portgroups(node);

    CREATE TABLE ports (
        uuid       text PRIMARY KEY,
        address    text NOT NULL UNIQUE,
        node       text NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
        portgroup  text REFERENCES portgroups(uuid) ON DELETE SET NULL,
        created_at text NOT NULL
    );
    CREATE INDEX ports_node ON ports(node);
    CREATE INDEX ports_portgroup ON ports(portgroup);

    CREATE TABLE node_history (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        node       text NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
        at         text NOT NULL,
        event      text NOT NULL,
        from_state text NOT NULL,
        to_state   text NOT NULL,
        error      text
    );
    CREATE INDEX node_history_node_id ON node_history(node, id);

    CREATE TABLE jobs (
        id           bigint PRIMARY KEY,
        priority     integer NOT NULL,
        status       text NOT NULL,
        submitted_at text NOT NULL,
        started_at   text,
        ended_at     text,
        body         text NOT NULL,
        log          text NOT NULL DEFAULT '[]'
    );
    CREATE TABLE jobs_archive (LIKE jobs INCLUDING ALL);

    CREATE TABLE meta (
        key   text PRIMARY KEY,
        value text NOT NULL
    );

    CREATE TABLE events (
        serial bigint PRIMARY KEY,
        body   bytea NOT NULL
    );

    -- A check that a statement changed a row; raised as 'not found'.
    CREATE FUNCTION kiln_expect(changed bigint) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        IF changed = 0 THEN RAISE EXCEPTION 'no such row' USING ERRCODE = 'KLNF0'; END IF;
    END $$;

    -- A node write that changed nothing: the node is gone, or it is not
    -- this owner's at this epoch.
    CREATE FUNCTION kiln_node_written(changed bigint, node text) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        IF changed = 0 THEN
            IF EXISTS (SELECT 1 FROM nodes WHERE uuid = node) THEN
                RAISE EXCEPTION 'node % is owned by another member or epoch', node USING ERRCODE = 'KLFN0';
            END IF;
            RAISE EXCEPTION 'node % does not exist', node USING ERRCODE = 'KLNF0';
        END IF;
    END $$;

    -- True, unless the job id was archived: an archived id is never written again.
    CREATE FUNCTION kiln_not_archived(job bigint) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM jobs_archive WHERE id = job) THEN
            RAISE EXCEPTION 'job % is archived', job USING ERRCODE = 'KLAR0';
        END IF;
        RETURN true;
    END $$;

    -- An archive that moved nothing: the job is not live, or not finished.
    CREATE FUNCTION kiln_archived(moved bigint, job bigint) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        found text;
    BEGIN
        IF moved = 0 THEN
            SELECT status INTO found FROM jobs WHERE id = job;
            IF found IS NULL THEN
                RAISE EXCEPTION 'job % is not live', job USING ERRCODE = 'KLNF0';
            END IF;
            RAISE EXCEPTION '%', found USING ERRCODE = 'KLUF0';
        END IF;
    END $$;

    -- A port and its group are one node's, whatever writes them.
    CREATE FUNCTION kiln_port_group_same_node() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.portgroup IS NOT NULL
           AND EXISTS (SELECT 1 FROM portgroups WHERE uuid = NEW.portgroup AND node <> NEW.node) THEN
            RAISE EXCEPTION 'port group of another node' USING ERRCODE = 'KLPG0';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER ports_portgroup_same_node BEFORE INSERT OR UPDATE OF portgroup, node ON ports
        FOR EACH ROW EXECUTE FUNCTION kiln_port_group_same_node();
    "#,
    // 2: the members of a site (`members.rs`), and finding a member's nodes.
    r#"
    CREATE TABLE members (
        id           text PRIMARY KEY,
        name         text NOT NULL,
        host         text NOT NULL,
        pid          bigint NOT NULL,
        started_at   timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL DEFAULT now(),
        state        text NOT NULL CHECK (state IN ('alive', 'dead', 'left'))
    );
    CREATE INDEX members_alive ON members (state, heartbeat_at);
    CREATE INDEX nodes_owner ON nodes (owner);
    "#,
    // 3: node requests between members (`requests.rs`).
    r#"
    CREATE TABLE node_requests (
        id         bigserial PRIMARY KEY,
        node       text NOT NULL,
        caller     text NOT NULL,
        body       text NOT NULL,
        state      text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'answered')),
        answer     text,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX node_requests_queued ON node_requests (state, node);
    "#,
    // 4: the member that runs each job (`runner`), fenced as node owners are.
    r#"
    ALTER TABLE jobs ADD COLUMN runner text NOT NULL DEFAULT '';
    ALTER TABLE jobs_archive ADD COLUMN runner text NOT NULL DEFAULT '';
    CREATE INDEX jobs_runner ON jobs (runner);

    -- A job write that changed nothing: the job is run by another member,
    -- or it is not live.
    CREATE FUNCTION kiln_job_written(changed bigint, job bigint) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        IF changed = 0 THEN
            IF EXISTS (SELECT 1 FROM jobs WHERE id = job) THEN
                RAISE EXCEPTION 'job % is run by another member', job USING ERRCODE = 'KLFN0';
            END IF;
            RAISE EXCEPTION 'job % is not live', job USING ERRCODE = 'KLNF0';
        END IF;
    END $$;

    -- An archive that moved nothing: the job is not live, is run by another
    -- member, or is not finished.
    CREATE FUNCTION kiln_job_archived(moved bigint, job bigint, me text) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        found_status text;
        found_runner text;
    BEGIN
        IF moved = 0 THEN
            SELECT status, runner INTO found_status, found_runner FROM jobs WHERE id = job;
            IF found_status IS NULL THEN
                RAISE EXCEPTION 'job % is not live', job USING ERRCODE = 'KLNF0';
            END IF;
            IF found_runner <> me THEN
                RAISE EXCEPTION 'job % is run by another member', job USING ERRCODE = 'KLFN0';
            END IF;
            RAISE EXCEPTION '%', found_status USING ERRCODE = 'KLUF0';
        END IF;
    END $$;
    "#,
    // 5: each member's event stream apart (`source`: its name), so members'
    // serials never collide and each goes on across its restarts.
    r#"
    ALTER TABLE events ADD COLUMN source text NOT NULL DEFAULT '';
    ALTER TABLE events DROP CONSTRAINT events_pkey;
    ALTER TABLE events ADD PRIMARY KEY (source, serial);
    "#,
    // 6: SQLite's 6: what kiln knows of a node's BMC.
    r#"
    ALTER TABLE nodes ADD COLUMN bmc_last_contact text;
    ALTER TABLE nodes ADD COLUMN bmc_unreachable_since text;
    ALTER TABLE nodes ADD COLUMN power_verified_at text;
    CREATE INDEX nodes_bmc_unreachable ON nodes(bmc_unreachable_since) WHERE bmc_unreachable_since IS NOT NULL;
    "#,
    // 7: SQLite's 7: what kiln learned about a node's BMC (JSON).
    r#"
    ALTER TABLE nodes ADD COLUMN bmc_profile text;
    "#,
    // 8: SQLite's 8: a node's `extra` and `instance_info`, JSON text.
    r#"
    ALTER TABLE nodes ADD COLUMN extra text NOT NULL DEFAULT '{}';
    ALTER TABLE nodes ADD COLUMN instance_info text NOT NULL DEFAULT '{}';
    "#,
    // 9: SQLite's 9: the callback a node waits for (JSON: token, since).
    r#"
    ALTER TABLE nodes ADD COLUMN callback text;
    "#,
    // 10: one event stream for the site (`events.rs`): one serial space, in
    // commit order across members; `source` still names the member that
    // wrote each event. The events kept so far are renumbered in (serial,
    // source) order: each member's own keep their order, and none gets a
    // serial below its old one, so a consumer's `--since` from before the
    // upgrade loses nothing (it may see some twice, once).
    r#"
    ALTER TABLE events DROP CONSTRAINT events_pkey;
    UPDATE events e SET serial = r.n
        FROM (SELECT source, serial, row_number() OVER (ORDER BY serial, source) AS n FROM events) r
        WHERE e.source = r.source AND e.serial = r.serial;
    ALTER TABLE events ADD PRIMARY KEY (serial);

    -- Appends one event after every event committed so far, and wakes
    -- every member's bus. The advisory lock (events::EVENTS_LOCK) is held
    -- to the end of the transaction, so serials are given in commit order;
    -- the function is volatile, so its max(serial) is read with a snapshot
    -- taken once the lock is held, and sees the commit of the last holder.
    CREATE FUNCTION kiln_append_event(event_body bytea, writer text) RETURNS bigint
        LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        given bigint;
    BEGIN
        PERFORM pg_advisory_xact_lock(1801811572);
        SELECT coalesce(max(serial), 0) + 1 INTO given FROM events;
        INSERT INTO events (serial, body, source) VALUES (given, event_body, writer);
        PERFORM pg_notify('kiln_events', '');
        RETURN given;
    END $$;

    -- Several events at once, in order (a group's run of events): one
    -- call, one lock, one max(serial), one insert. Returns the last serial.
    CREATE FUNCTION kiln_append_events(event_bodies bytea[], writer text) RETURNS bigint
        LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        last bigint;
    BEGIN
        PERFORM pg_advisory_xact_lock(1801811572);
        SELECT coalesce(max(serial), 0) INTO last FROM events;
        INSERT INTO events (serial, body, source)
            SELECT last + t.n, t.body, writer FROM unnest(event_bodies) WITH ORDINALITY AS t(body, n);
        PERFORM pg_notify('kiln_events', '');
        RETURN last + coalesce(array_length(event_bodies, 1), 0);
    END $$;
    "#,
    // 11: the site's directory kept current on every member: a node's
    // creation, rename and deletion is announced on `kiln_directory`
    // (`listener.rs`) when it commits, whoever wrote it. A rename is told
    // only when the name changes, so the write of a transition pays a
    // comparison, not a notification.
    r#"
    CREATE FUNCTION kiln_directory_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('kiln_directory', OLD.uuid);
        ELSE
            PERFORM pg_notify('kiln_directory', NEW.uuid || ' ' || NEW.name);
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER nodes_directory_added_or_gone AFTER INSERT OR DELETE ON nodes
        FOR EACH ROW EXECUTE FUNCTION kiln_directory_notify();
    CREATE TRIGGER nodes_directory_renamed AFTER UPDATE OF name ON nodes
        FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name) EXECUTE FUNCTION kiln_directory_notify();
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key under which the schema is migrated ("kiln" in ASCII).
pub const MIGRATION_LOCK: i64 = 0x6b69_6c6e;
