-- The shared data path of data streams (docs/cluster.md, "Records").

-- Secrets every node must share (the shard-iterator key, the token nodes forward
-- writes with). Written once by the first node that needs one (INSERT ... ON CONFLICT
-- DO NOTHING), then read by all.
CREATE TABLE cluster_secrets (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);

-- The shared stream catalog: one row per data stream, with its metadata as the
-- embedded catalog stores it (JSON). Every node mirrors these rows into its own
-- catalog. A deleted stream keeps its row, marked, so that a node that missed the
-- deletion still learns of it.
CREATE TABLE cluster_streams (
    name         text        PRIMARY KEY,
    -- The stream's epoch (its creation time in ms): part of every sequence number.
    stream_epoch bigint      NOT NULL,
    meta         bytea       NOT NULL,
    deleted      boolean     NOT NULL DEFAULT false,
    changed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The record index: one row per immutable object of records in the object store,
-- inserted by the shard's owner inside its fenced transaction, so that a row exists
-- only for a batch whose object is stored and whose writer held the lease. Offsets
-- are the shard-local part of sequence numbers: lease epoch * 10^12 + a counter, so a
-- new owner's records sort after every record of the owners before it.
CREATE TABLE cluster_record_objects (
    stream           text        NOT NULL,
    stream_epoch     bigint      NOT NULL,
    shard            integer     NOT NULL,
    first_offset     bigint      NOT NULL,
    last_offset      bigint      NOT NULL CHECK (last_offset >= first_offset),
    records          integer     NOT NULL CHECK (records > 0),
    bytes            bigint      NOT NULL,
    first_arrival_ms bigint      NOT NULL,
    last_arrival_ms  bigint      NOT NULL,
    object_key       text        NOT NULL UNIQUE,
    lease_epoch      bigint      NOT NULL,
    node_id          text        NOT NULL,
    committed_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (stream, stream_epoch, shard, first_offset)
);

CREATE INDEX cluster_record_objects_last
    ON cluster_record_objects (stream, stream_epoch, shard, last_offset);
