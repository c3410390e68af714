-- Cluster membership and leases (docs/cluster.md).
--
-- Every time is the database's own (clock_timestamp()), never a node's, so clock skew
-- between nodes cannot make a lease look free to one node while another still holds it.

-- One row per node that has joined. A node is live while its heartbeat is younger than
-- the lease time.
CREATE TABLE cluster_nodes (
    node_id       text        PRIMARY KEY,
    advertise_url text        NOT NULL,
    -- The node's lease time: it is live while its heartbeat is younger than this.
    lease_ms      integer     NOT NULL CHECK (lease_ms > 0),
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One row per resource the cluster knows (`shard:<stream>/<shard id>`,
-- `video:<stream>`), owned or not. `epoch` only grows: every change of owner (and every
-- new grant after a release) adds one, so a write fenced on (resource, epoch) can be
-- refused once anyone else has been granted the resource.
CREATE TABLE cluster_leases (
    resource   text        PRIMARY KEY,
    owner      text,
    epoch      bigint      NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    expires_at timestamptz NOT NULL DEFAULT 'epoch'
);

CREATE INDEX cluster_leases_owner ON cluster_leases (owner);
